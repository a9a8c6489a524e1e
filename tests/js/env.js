// What a client of Atrium's agents API is given: its URL and an Atrium key (or, in a browser, a user's token).
export const apiUrl = process.env.ATRIUM_URL;
export const apiKey = process.env.ATRIUM_KEY;
// A member's access token (POST /api/v1/auth/token), as a browser app holds one: sent as a Bearer header.
export const userToken = process.env.ATRIUM_USER_TOKEN;
if (!apiUrl || !apiKey || !userToken) {
  throw new Error("Set ATRIUM_URL, ATRIUM_KEY and ATRIUM_USER_TOKEN (tests/contract/test_langgraph_js_sdk.py does).");
}
// What the fake chat model answers without documents (atrium.gateway.providers.fake.NO_ANSWER).
export const NO_ANSWER = "I don't know based on the provided documents.";
// A prompt no earlier run sent: the gateway's answer cache would otherwise give back a whole answer at once.
export const fresh = (text) => `${text} (${crypto.randomUUID().slice(0, 8)})`;
