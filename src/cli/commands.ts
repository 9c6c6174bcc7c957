// The command line of API.md: migrate, assign-role, check and healthcheck. Each command reads what it
// needs from the environment through src/config.ts and reports failure as one line, never a stack trace.

import { parseArgs } from "node:util";
import { ConfigError } from "../config.ts";

export class UsageError extends Error {}

export interface CommandSpec {
  name: string;
  summary: string;
  usage: string;
  options: Record<string, { type: "string"; description: string }>;
}

/** Parses `--name value` options; every option listed is required. */
export function parseOptions(spec: CommandSpec, argv: string[]): Record<string, string> {
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: argv,
      options: Object.fromEntries(Object.entries(spec.options).map(([name, { type }]) => [name, { type }])),
      strict: true,
      allowPositionals: false,
    });
  } catch (error) {
    throw new UsageError((error as Error).message.split("\n")[0] ?? "bad arguments");
  }
  const values: Record<string, string> = {};
  for (const name of Object.keys(spec.options)) {
    const value = parsed.values[name];
    if (typeof value !== "string" || value === "") throw new UsageError(`--${name} is required`);
    values[name] = value;
  }
  return values;
}

export function helpText(spec: CommandSpec): string {
  const lines = [`Usage: ${spec.usage}`, "", spec.summary];
  const options = Object.entries(spec.options);
  if (options.length > 0) {
    lines.push("", "Options:");
    for (const [name, option] of options) lines.push(`  --${name.padEnd(12)} ${option.description}`);
  }
  return `${lines.join("\n")}\n`;
}

/** One line for a failed command: what went wrong, never a stack trace or a secret. */
export function describeFailure(error: unknown): string {
  if (error instanceof ConfigError || error instanceof UsageError) return error.message;
  if (error instanceof Error) return error.message.split("\n")[0] ?? "failed";
  return String(error);
}
