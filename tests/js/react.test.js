// @vitest-environment jsdom
// The React hook useStream (@langchain/langgraph-sdk/react) against Atrium: only apiUrl and an Atrium key.
import { afterEach, describe, expect, it } from "vitest";
import { act, cleanup, renderHook, waitFor } from "@testing-library/react";
import { useStream } from "@langchain/langgraph-sdk/react";
import { Client } from "@langchain/langgraph-sdk";
import { NO_ANSWER, apiKey, apiUrl, userToken } from "./env.js";

afterEach(cleanup);

const settled = { timeout: 15_000 };

describe("useStream against Atrium", () => {
  it("streams the echo assistant's answer into messages", async () => {
    const { result } = renderHook(() => useStream({ apiUrl, apiKey, assistantId: "echo", messagesKey: "messages" }));
    expect(result.current.messages).toEqual([]);

    await act(async () => {
      await result.current.submit({ messages: [{ type: "human", content: "hi" }] });
    });
    await waitFor(() => expect(result.current.isLoading).toBe(false), settled);

    expect(result.current.error).toBeUndefined();
    const messages = result.current.messages;
    expect(messages.map((m) => [m.type, m.content])).toEqual([["human", "hi"], ["ai", NO_ANSWER]]);
    expect(result.current.values.messages.at(-1).content).toBe(NO_ANSWER);
  });

  it("shows the interviewer's interrupt, then resumes it with a command", async () => {
    let threadId;
    const { result } = renderHook(() => useStream({
      apiUrl, apiKey, assistantId: "interviewer",
      onThreadId: (id) => { threadId = id; },
    }));
    expect(result.current.messages).toEqual([]); // read as a component renders it: streams values and messages

    await act(async () => {
      await result.current.submit({ messages: [{ type: "human", content: "Hello" }] });
    });
    await waitFor(() => expect(result.current.isLoading).toBe(false), settled);
    expect(result.current.error).toBeUndefined();
    expect(threadId).toBeTruthy();
    expect(result.current.interrupt?.value).toEqual({ question: "What is your name?" });

    await act(async () => {
      await result.current.submit(undefined, { command: { resume: "Ada" } });
    });
    await waitFor(() => expect(result.current.isLoading).toBe(false), settled);
    expect(result.current.error).toBeUndefined();
    expect(result.current.interrupt).toBeUndefined();
    expect(result.current.values.name).toBe("Ada");
    expect(result.current.messages.at(-1)).toMatchObject({ type: "ai", content: `Ada: ${NO_ANSWER}` });
    expect(result.current.messages.map((m) => m.content)).toEqual(["Hello", `Ada: ${NO_ANSWER}`]);
  });

  it("gives the interrupt to a hook that reads nothing else (no stream mode asked for)", async () => {
    // A question form: it never reads messages or values, so the hook asks for no stream mode at all; the
    // interrupt must still come (the platform sends it as a values event whatever the modes).
    let threadId;
    const { result } = renderHook(() => useStream({
      apiUrl, apiKey, assistantId: "interviewer",
      onThreadId: (id) => { threadId = id; },
    }));
    await act(async () => {
      await result.current.submit({ messages: [{ type: "human", content: "Hello" }] });
    });
    await waitFor(() => expect(result.current.isLoading).toBe(false), settled);
    expect(result.current.error).toBeUndefined();
    expect(result.current.interrupt?.value).toEqual({ question: "What is your name?" });

    await act(async () => {
      await result.current.submit(undefined, { command: { resume: "Grace" } });
    });
    await waitFor(() => expect(result.current.isLoading).toBe(false), settled);
    expect(result.current.error).toBeUndefined();
    const state = await new Client({ apiUrl, apiKey }).threads.getState(threadId);
    expect(state.next).toEqual([]);
    expect(state.values.name).toBe("Grace");
    expect(state.values.messages.at(-1).content).toBe(`Grace: ${NO_ANSWER}`);
  });

  it("runs as the signed-in user with an access token instead of a key", async () => {
    let threadId;
    const { result } = renderHook(() => useStream({
      apiUrl, assistantId: "echo",
      defaultHeaders: { Authorization: `Bearer ${userToken}` },
      onThreadId: (id) => { threadId = id; },
    }));
    expect(result.current.messages).toEqual([]);
    await act(async () => {
      await result.current.submit({ messages: [{ type: "human", content: "hi" }] });
    });
    await waitFor(() => expect(result.current.isLoading).toBe(false), settled);
    expect(result.current.error).toBeUndefined();
    expect(result.current.messages.map((m) => m.content)).toEqual(["hi", NO_ANSWER]);
    // The thread is the user's and private: the admin's key does not see it, the user's token does.
    const asUser = new Client({ apiUrl, defaultHeaders: { Authorization: `Bearer ${userToken}` } });
    expect((await asUser.threads.get(threadId)).status).toBe("idle");
    await expect(new Client({ apiUrl, apiKey }).threads.get(threadId)).rejects.toMatchObject({ status: 404 });
  });
});
