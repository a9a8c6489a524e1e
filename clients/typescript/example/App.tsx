// A small React app on the generated client: sign in with an API key, upload a document, ask with the answer
// streamed in and its cited sources listed, and search. Every path, body and answer below is type-checked
// against Atrium's OpenAPI document (`npm run typecheck`).
import { useState, type FormEvent } from "react";
import { askStream, createAtriumClient, type AtriumClient, type Schemas } from "../src";

export function App({ baseUrl }: { baseUrl: string }) {
  const [client, setClient] = useState<AtriumClient | null>(null);
  return client ? <Workspace client={client} /> : <SignIn onSignIn={(key) => setClient(createAtriumClient({ baseUrl, credential: key }))} />;
}

function SignIn({ onSignIn }: { onSignIn: (key: string) => void }) {
  const [key, setKey] = useState("");
  return (
    <form onSubmit={(event) => { event.preventDefault(); onSignIn(key); }}>
      <input type="password" value={key} onChange={(event) => setKey(event.target.value)} placeholder="atr_..." />
      <button type="submit">Sign in</button>
    </form>
  );
}

function Workspace({ client }: { client: AtriumClient }) {
  return (
    <>
      <Upload client={client} />
      <Chat client={client} />
      <Search client={client} />
    </>
  );
}

function Upload({ client }: { client: AtriumClient }) {
  const [job, setJob] = useState<Schemas["JobView"] | null>(null);
  async function upload(files: FileList) {
    const form = new FormData();
    for (const file of files) form.append("files", file);
    // The multipart body is sent as is; the generated type only describes its fields.
    const { data } = await client.POST("/api/v1/documents", {
      body: form as unknown as Schemas["Body_upload_api_v1_documents_post"], bodySerializer: (body) => body,
    });
    if (!data || !("job_id" in data)) return;
    for (;;) {
      const { data: current } = await client.GET("/api/v1/jobs/{job_id}", { params: { path: { job_id: data.job_id } } });
      if (!current) return;
      setJob(current);
      if (current.status !== "queued" && current.status !== "running") return;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }
  return (
    <section>
      <input type="file" multiple onChange={(event) => event.target.files && upload(event.target.files)} />
      {job && <progress max={1} value={job.progress} title={job.status} />}
    </section>
  );
}

function Chat({ client }: { client: AtriumClient }) {
  const [question, setQuestion] = useState("");
  const [answer, setAnswer] = useState("");
  const [sources, setSources] = useState<Schemas["Source"][]>([]);
  const [conversation, setConversation] = useState<string | null>(null);

  async function ask(event: FormEvent) {
    event.preventDefault();
    setAnswer("");
    setSources([]);
    for await (const part of askStream(client, { message: question, conversation_id: conversation })) {
      switch (part.event) {
        case "meta": setConversation(part.data.conversation_id); break;
        case "token": setAnswer((text) => text + part.data.text); break;
        case "discard": setAnswer(""); break;
        case "sources": setSources(part.data.sources); break;
        case "done": setAnswer(part.data.answer); break;
        case "error": setAnswer(`${part.data.message} (${part.data.code})`); break;
      }
    }
  }

  return (
    <section>
      <form onSubmit={ask}>
        <input value={question} onChange={(event) => setQuestion(event.target.value)} />
        <button type="submit">Ask</button>
      </form>
      <p>{answer}</p>
      <ol>
        {sources.filter((source) => source.cited).map((source) => (
          <li key={source.number} value={source.number}>{source.title} ({source.source})</li>
        ))}
      </ol>
    </section>
  );
}

function Search({ client }: { client: AtriumClient }) {
  const [hits, setHits] = useState<Pick<Schemas["SearchHit"], "chunk_id" | "heading" | "title" | "snippet">[]>([]);
  async function search(query: string) {
    const { data } = await client.POST("/api/v1/search/semantic", { body: { query, limit: 5, mode: "hybrid" } });
    setHits(data?.results ?? []);
  }
  return (
    <section>
      <input type="search" onKeyDown={(event) => event.key === "Enter" && search(event.currentTarget.value)} />
      <ul>{hits.map((hit) => <li key={hit.chunk_id}>{hit.heading || hit.title}: {hit.snippet}</li>)}</ul>
    </section>
  );
}
