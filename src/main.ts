// Entry: parse the command line and hand over to a command (bin/flip-authz.js has checked the Node version).

import { NIL_UUID } from "./authz/ids.ts";
import { type CommandSpec, describeFailure, helpText, parseOptions, UsageError } from "./cli/commands.ts";
import { loadConfig } from "./config.ts";

const COMMANDS: Record<string, CommandSpec> = {
  serve: {
    name: "serve",
    summary:
      "Run the service: gRPC on AUTHZ_GRPC_LISTEN, Connect/HTTP on AUTHZ_HTTP_LISTEN (the default command).",
    usage: "flip-authz serve",
    options: {},
  },
  migrate: {
    name: "migrate",
    summary: "Apply the migrations and FLIP's seed to DATABASE_URL, then exit.",
    usage: "flip-authz migrate",
    options: {},
  },
  "assign-role": {
    name: "assign-role",
    summary: "Give a user a role (bootstrap the first Admin). Audited with the nil UUID as actor.",
    usage: "flip-authz assign-role --user <uuid> --role <role name or uuid>",
    options: {
      user: { type: "string", description: "the user's Cognito sub (a UUID)" },
      role: { type: "string", description: "a role name (case-insensitive) or the role's UUID" },
    },
  },
  import: {
    name: "import",
    summary:
      "Bulk-assign roles (and set names, organisations) from a CSV file with the header user_id,role[,name,organisation]. Validates the whole file first; writes nothing if a line is bad; idempotent; audited with the nil UUID as actor.",
    usage: "flip-authz import --file <users.csv>",
    options: {
      file: { type: "string", description: "the CSV file (roles by name or UUID)" },
    },
  },
  check: {
    name: "check",
    summary:
      "Print allowed or denied (exit 0 either way) for a user and a permission, read from DATABASE_URL.",
    usage: "flip-authz check --user <uuid> --permission <name or uuid>",
    options: {
      user: { type: "string", description: "the user's Cognito sub (a UUID)" },
      permission: {
        type: "string",
        description: "a permission name (case-insensitive) or the permission's UUID",
      },
    },
  },
  healthcheck: {
    name: "healthcheck",
    summary: "Exit 0 when the local server (AUTHZ_GRPC_LISTEN) reports SERVING, 1 otherwise.",
    usage: "flip-authz healthcheck",
    options: {},
  },
};

function usage(): string {
  const lines = ["Usage: flip-authz <command> [options]", "", "Commands:"];
  for (const spec of Object.values(COMMANDS)) lines.push(`  ${spec.name.padEnd(12)} ${spec.summary}`);
  lines.push(
    "",
    "Run flip-authz <command> --help for a command's options. Configuration is read from the environment.",
  );
  return `${lines.join("\n")}\n`;
}

async function run(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  if (first === "--help" || first === "-h" || first === "help") {
    process.stdout.write(usage());
    return 0;
  }
  const name = first ?? "serve";
  const spec = COMMANDS[name];
  if (!spec) throw new UsageError(`unknown command ${JSON.stringify(name)}; run flip-authz --help`);
  if (rest.includes("--help") || rest.includes("-h")) {
    process.stdout.write(helpText(spec));
    return 0;
  }
  const options = parseOptions(spec, rest);
  const config = loadConfig();
  switch (name) {
    case "serve": {
      const { serve } = await import("./cli/serve.ts");
      return serve(config);
    }
    case "migrate": {
      const { migrateCommand } = await import("./cli/database.ts");
      return migrateCommand(config);
    }
    case "assign-role": {
      const { assignRoleCommand } = await import("./cli/database.ts");
      return assignRoleCommand(config, options.user ?? "", options.role ?? "", NIL_UUID);
    }
    case "import": {
      const { importCommand } = await import("./cli/import.ts");
      return importCommand(config, options.file ?? "");
    }
    case "check": {
      const { checkCommand } = await import("./cli/database.ts");
      return checkCommand(config, options.user ?? "", options.permission ?? "");
    }
    case "healthcheck": {
      const { healthcheckCommand } = await import("./cli/healthcheck.ts");
      return healthcheckCommand(config);
    }
  }
  return 2;
}

try {
  process.exitCode = await run(process.argv.slice(2));
} catch (error) {
  process.stderr.write(`flip-authz: ${describeFailure(error)}\n`);
  process.exitCode = error instanceof UsageError ? 2 : 1;
}
