// The official LangGraph JS SDK client against Atrium, with only the URL and an Atrium key given.
import { describe, expect, it } from "vitest";
import { Client } from "@langchain/langgraph-sdk";
import { NO_ANSWER, apiKey, apiUrl, fresh } from "./env.js";

const client = new Client({ apiUrl, apiKey });
const contents = (values) => (values.messages ?? []).map((m) => m.content);

async function collect(iterable) {
  const parts = [];
  for await (const part of iterable) parts.push(part);
  return parts;
}

describe("Client against Atrium", () => {
  it("refuses a wrong key (the key is what authenticates)", async () => {
    const wrong = new Client({ apiUrl, apiKey: "atr_not_a_key_0123456789abcdefghijklmnopq" });
    await expect(wrong.threads.create()).rejects.toMatchObject({ status: 401 });
  });

  it("lists the assistants", async () => {
    const assistants = await client.assistants.search({ limit: 100 });
    expect(assistants.map((a) => a.graph_id)).toEqual(expect.arrayContaining(["echo", "interviewer"]));
    const echo = await client.assistants.get("echo");
    expect(echo.graph_id).toBe("echo");
  });

  it("streams a run: metadata, message tuples, values, end", async () => {
    const thread = await client.threads.create({ metadata: { topic: "js-sdk" } });
    const hello = fresh("Hello from JS");
    let created;
    const parts = await collect(client.runs.stream(thread.thread_id, "echo", {
      input: { messages: [{ type: "human", content: hello }] },
      streamMode: ["values", "messages-tuple", "updates", "custom"],
      onRunCreated: (meta) => { created = meta; },
    }));
    const names = parts.map((p) => p.event);
    expect(names[0]).toBe("metadata");
    expect(names.at(-1)).toBe("end");
    expect(new Set(names)).toEqual(new Set(["metadata", "values", "messages", "updates", "custom", "end"]));
    // The run's id, read by the SDK from Content-Location, is the one in the metadata event.
    expect(created?.run_id).toBe(parts[0].data.run_id);
    expect(created?.thread_id).toBe(thread.thread_id);
    // messages-tuple: [chunk, metadata]; the chunks' text is the answer.
    const tuples = parts.filter((p) => p.event === "messages").map((p) => p.data);
    expect(tuples.length).toBeGreaterThan(1);
    expect(tuples.map(([chunk]) => chunk.content).join("")).toBe(NO_ANSWER);
    expect(tuples[0][1].langgraph_node).toBe("answer");
    const tokens = parts.filter((p) => p.event === "custom").map((p) => p.data.text);
    expect(tokens.join("")).toBe(NO_ANSWER);
    const last = parts.filter((p) => p.event === "values").at(-1).data;
    expect(last.messages.map((m) => m.type)).toEqual(["human", "ai"]);
    expect(contents(last)).toEqual([hello, NO_ANSWER]);
    const updates = parts.filter((p) => p.event === "updates").map((p) => p.data);
    expect(updates.at(-1).answer.messages[0].content).toBe(NO_ANSWER);

    const runs = await client.runs.list(thread.thread_id);
    expect(runs.map((r) => [r.run_id, r.status])).toEqual([[created.run_id, "success"]]);
  });

  it("waits for a run, then reads the state and the history", async () => {
    const thread = await client.threads.create();
    const first = await client.runs.wait(thread.thread_id, "echo", {
      input: { messages: [{ type: "human", content: "One" }] },
    });
    expect(contents(first)).toEqual(["One", NO_ANSWER]);
    const second = await client.runs.wait(thread.thread_id, "echo", {
      input: { messages: [{ role: "user", content: "Two" }] },
    });
    expect(contents(second)).toEqual(["One", NO_ANSWER, "Two", NO_ANSWER]);

    const state = await client.threads.getState(thread.thread_id);
    expect(state.values).toEqual(second);
    expect(state.next).toEqual([]);
    expect(state.checkpoint.checkpoint_id).toBeTruthy();
    const history = await client.threads.getHistory(thread.thread_id, { limit: 50 });
    expect(history[0].checkpoint).toEqual(state.checkpoint);
    expect(history.length).toBeGreaterThanOrEqual(4);
    // Newest first: the oldest checkpoints hold less of the conversation.
    expect(contents(history.at(-1).values ?? {})).toEqual([]);
    const earlier = history.find((s) => contents(s.values).length === 2);
    expect(contents(earlier.values)).toEqual(["One", NO_ANSWER]);
    const atEarlier = await client.threads.getState(thread.thread_id, earlier.checkpoint.checkpoint_id);
    expect(contents(atEarlier.values)).toEqual(["One", NO_ANSWER]);

    const found = await client.threads.get(thread.thread_id);
    expect(found.status).toBe("idle");
    expect(found.values).toEqual(second);
  });

  it("answers an interrupt with command.resume", async () => {
    const thread = await client.threads.create();
    const first = await client.runs.wait(thread.thread_id, "interviewer", {
      input: { messages: [{ type: "human", content: "Hello" }] },
    });
    expect(first.__interrupt__[0].value).toEqual({ question: "What is your name?" });
    expect((await client.threads.get(thread.thread_id)).status).toBe("interrupted");
    const state = await client.threads.getState(thread.thread_id);
    expect(state.next).toEqual(["ask_name"]);
    expect(state.tasks[0].interrupts[0].value).toEqual({ question: "What is your name?" });

    const parts = await collect(client.runs.stream(thread.thread_id, "interviewer", {
      command: { resume: "Ada" },
      streamMode: "values",
    }));
    const final = parts.filter((p) => p.event === "values").at(-1).data;
    expect(final.name).toBe("Ada");
    expect(contents(final).at(-1)).toBe(`Ada: ${NO_ANSWER}`);
    expect((await client.threads.get(thread.thread_id)).status).toBe("idle");
  });

  it("joins a background run and its event stream", async () => {
    const thread = await client.threads.create();
    const run = await client.runs.create(thread.thread_id, "echo", {
      input: { messages: [{ type: "human", content: "In the background" }] },
      streamMode: ["values", "custom"],
    });
    expect(["pending", "running"]).toContain(run.status);
    const joined = await collect(client.runs.joinStream(thread.thread_id, run.run_id));
    expect(joined.at(-1).event).toBe("end");
    expect(joined.filter((p) => p.event === "custom").map((p) => p.data.text).join("")).toBe(NO_ANSWER);
    const values = await client.runs.join(thread.thread_id, run.run_id);
    expect(contents(values)).toEqual(["In the background", NO_ANSWER]);
    expect((await client.runs.get(thread.thread_id, run.run_id)).status).toBe("success");
  });

  it("cancels a run while it streams", async () => {
    const thread = await client.threads.create();
    // A numbered source makes the fake model answer with its (long) first sentence, a word at a time.
    const long = fresh(Array.from({ length: 300 }, (_, i) => `w${i}`).join(" "));
    let runId;
    let cancelled = false;
    const parts = [];
    for await (const part of client.runs.stream(thread.thread_id, "echo", {
      input: { messages: [{ type: "human", content: `[1] ${long}` }] },
      streamMode: ["messages-tuple"],
      onRunCreated: (meta) => { runId = meta.run_id; },
    })) {
      parts.push(part);
      if (part.event === "messages" && !cancelled) {
        cancelled = true;
        await client.runs.cancel(thread.thread_id, runId, true); // wait: answers once the run has ended
        expect((await client.runs.get(thread.thread_id, runId)).status).toBe("cancelled");
      }
    }
    const streamed = parts.filter((p) => p.event === "messages").map((p) => p.data[0].content).join("");
    expect(streamed).toMatch(/^w0( w1)?/); // cut off after its first words
    expect(streamed.length).toBeLessThan(long.length);
    expect(parts.map((p) => p.event).at(-1)).toBe("end");
    expect((await client.runs.get(thread.thread_id, runId)).status).toBe("cancelled");
    const thread_ = await client.threads.get(thread.thread_id);
    expect(thread_.status).toBe("idle");
    // No complete answer was kept: the cancelled run wrote no AI message.
    expect((thread_.values?.messages ?? []).filter((m) => m.type === "ai")).toEqual([]);
    expect(parts.find((p) => p.event === "error").data).toEqual({
      error: "cancelled", message: "The run was cancelled." });
  });
});
