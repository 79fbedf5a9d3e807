// The official Anthropic SDK against a local Pensieve server: only the base URL changes.
//   npm install @anthropic-ai/sdk && node examples/anthropic_sdk.mjs
import Anthropic from "@anthropic-ai/sdk";

const client = new Anthropic({
  baseURL: process.env.ANTHROPIC_BASE_URL ?? "http://127.0.0.1:7777",
  apiKey: process.env.ANTHROPIC_API_KEY ?? "local",
});

const message = await client.messages.create({
  model: "claude-3-5-sonnet-latest",
  max_tokens: 100,
  messages: [{ role: "user", content: "What does library mean?" }],
});
console.log(message.content[0].text);
console.log(message.stop_reason, message.usage);

const stream = client.messages.stream({
  model: "claude-3-5-sonnet-latest",
  max_tokens: 60,
  messages: [{ role: "user", content: "What is the opposite of hot?" }],
});
stream.on("text", (text) => process.stdout.write(text));
const final = await stream.finalMessage();
console.log("\n" + final.stop_reason);
