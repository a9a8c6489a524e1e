// Run by tests/contract/test_langgraph_js_sdk.py against a live Atrium (ATRIUM_URL, ATRIUM_KEY).
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["*.test.js", "*.test.jsx"],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    fileParallelism: false, // two cores; the server is shared
  },
});
