// deploy/grafana-dashboard.json and deploy/prometheus-rules.yaml against a real /metrics scrape: a real
// `flip-authz serve` (route guard on) is called over gRPC, Connect and /forward-auth so its series exist,
// then every metric the dashboard's queries and the alert rules' expressions read must be in that scrape,
// with every label they match on. The PromQL reading (test/helpers/promql.ts) is checked first.

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { AuthzService, ListRolesRequestSchema } from "../../gen/flip/authz/v1/authz_pb.ts";
import { type ExpressionNames, labelValuesQuery, namesIn, scrapeIndex } from "../helpers/promql.ts";
import { type ServeProcess, startServe, stopAll } from "../helpers/serve-process.ts";

const TOKEN = "observability-test-token-01";
/** Series Prometheus makes itself for every target; never in a scrape. */
const SYNTHETIC = new Set(["up"]);
/** Labels Prometheus adds to every series from the target (a ServiceMonitor's relabelling). */
const TARGET_LABELS = new Set(["job", "instance", "namespace", "pod", "service", "container", "endpoint"]);

type Node = Record<string, unknown>;

interface Query {
  where: string;
  names: ExpressionNames;
}

function dashboardQueries(): Query[] {
  const dashboard = JSON.parse(readFileSync("deploy/grafana-dashboard.json", "utf8")) as Node;
  const queries: Query[] = [];
  const visit = (panels: Node[]) => {
    for (const panel of panels) {
      for (const target of (panel.targets ?? []) as Node[]) {
        queries.push({ where: `panel "${String(panel.title)}"`, names: namesIn(String(target.expr)) });
      }
      visit((panel.panels ?? []) as Node[]);
    }
  };
  visit(dashboard.panels as Node[]);
  for (const variable of (dashboard.templating as { list: Node[] }).list) {
    if (variable.type !== "query") continue;
    const query = variable.query as string | { query: string };
    const text = typeof query === "string" ? query : query.query;
    const parsed = labelValuesQuery(text);
    expect(parsed, `variable ${String(variable.name)}: ${text}`).toBeDefined();
    if (parsed) queries.push({ where: `variable ${String(variable.name)}`, names: parsed.selector });
  }
  return queries;
}

/** The rules of deploy/prometheus-rules.yaml, its one document a PrometheusRule. */
function rules(): Node[] {
  const docs = parseAllDocuments(readFileSync("deploy/prometheus-rules.yaml", "utf8")).map((d) => {
    expect(d.errors).toEqual([]);
    return d.toJS() as Node;
  });
  expect(docs.map((doc) => `${String(doc.apiVersion)} ${String(doc.kind)}`)).toEqual([
    "monitoring.coreos.com/v1 PrometheusRule",
  ]);
  const spec = docs[0]?.spec as { groups: { rules: Node[] }[] };
  return spec.groups.flatMap((group) => group.rules);
}

function ruleQueries(): Query[] {
  return rules().map((rule) => ({
    where: `rule ${String(rule.alert ?? rule.record)}`,
    names: namesIn(String(rule.expr)),
  }));
}

describe("reading PromQL for the names it uses", () => {
  it("finds metrics bare, before braces and in __name__, and skips functions, keywords, labels and strings", () => {
    const names = namesIn(
      `histogram_quantile(0.99, sum by (le, grpc_method) (rate(foo_seconds_bucket{job=~"$job",a!="}{x"}[$__rate_interval])))
       / on (instance) group_left (pod) bar offset 5m > bool 0.5
       and ignoring(x) sum without (y) (baz) unless {__name__="qux", b="1"} or label_replace(up, "dst", "$1", "src", "(.*)")
       # a comment naming not_a_metric
       - count_values("value", zed[5m:1m]) + 1e3`,
    );
    expect(names.selectors.map((s) => s.metric).sort()).toEqual(
      ["bar", "baz", "foo_seconds_bucket", "qux", "up", "zed"].sort(),
    );
    expect(names.selectors.find((s) => s.metric === "foo_seconds_bucket")?.labels).toEqual(["job", "a"]);
    expect(names.selectors.find((s) => s.metric === "qux")?.labels).toEqual(["b"]);
    expect(names.grouping.sort()).toEqual(["grpc_method", "instance", "le", "pod", "x", "y"].sort());
  });

  it("reads Grafana's label_values", () => {
    const parsed = labelValuesQuery('label_values(grpc_server_started_total{grpc_service="s"}, job)');
    expect(parsed?.label).toBe("job");
    expect(parsed?.selector.selectors).toEqual([
      { metric: "grpc_server_started_total", labels: ["grpc_service"] },
    ]);
  });
});

describe("the dashboard and the alert rules against a real scrape", () => {
  let dir: string;
  let serve: ServeProcess;
  let scrape: Map<string, Set<string>>;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "authz-observability-"));
    const routes = join(dir, "routes.yaml");
    writeFileSync(routes, "routes:\n  - path: /api/health\n    public: true\n");
    serve = await startServe(
      {
        DATABASE_URL: `sqlite:${join(dir, "authz.db")}`,
        AUTHZ_SERVICE_TOKENS: TOKEN,
        // Public routes only: the others need user JWTs, beside the point here.
        AUTHZ_ROUTES_FILE: routes,
      },
      { name: "observability" },
    );
    // Calls on both listeners and the route guard, so every labelled series exists.
    const client = new grpc.Client(serve.grpcTarget, grpc.credentials.createInsecure());
    const metadata = new grpc.Metadata();
    metadata.set("authorization", `Bearer ${TOKEN}`);
    await new Promise<void>((done, fail) =>
      client.makeUnaryRequest(
        `/${AuthzService.typeName}/ListRoles`,
        (value: Buffer) => value,
        (value: Buffer) => value,
        Buffer.from(toBinary(ListRolesRequestSchema, create(ListRolesRequestSchema, {}))),
        metadata,
        (error) => (error ? fail(error) : done()),
      ),
    );
    client.close();
    const connect = await fetch(`${serve.httpBase}/${AuthzService.typeName}/ListRoles`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${TOKEN}` },
      body: "{}",
    });
    expect(connect.status).toBe(200);
    await connect.arrayBuffer();
    const guarded = await fetch(`${serve.httpBase}/forward-auth`, {
      headers: { "x-forwarded-method": "GET", "x-forwarded-uri": "/api/health" },
    });
    expect(guarded.status).toBe(200);
    await guarded.arrayBuffer();
    const metrics = await fetch(`${serve.httpBase}/metrics`);
    expect(metrics.status).toBe(200);
    scrape = scrapeIndex(await metrics.text());
  }, 60_000);

  afterAll(async () => {
    await stopAll();
    rmSync(dir, { recursive: true, force: true });
  });

  /** What `queries` read that the scrape lacks, as "where: metric" or "where: metric{label}". */
  const missingIn = (queries: Query[]): string[] => {
    expect(queries.length).toBeGreaterThan(0);
    const missing: string[] = [];
    for (const { where, names } of queries) {
      expect(names.selectors.length, `${where} reads no metric`).toBeGreaterThan(0);
      const known = new Set<string>(TARGET_LABELS);
      for (const { metric, labels } of names.selectors) {
        if (SYNTHETIC.has(metric)) continue;
        const present = scrape.get(metric);
        if (!present) {
          missing.push(`${where}: ${metric}`);
          continue;
        }
        for (const label of present) known.add(label);
        for (const label of labels) {
          if (!present.has(label) && !TARGET_LABELS.has(label)) missing.push(`${where}: ${metric}{${label}}`);
        }
      }
      known.add("le");
      for (const label of names.grouping) {
        if (!known.has(label)) missing.push(`${where}: by/on (${label})`);
      }
    }
    return missing;
  };

  it("the scrape has the go-grpc-prometheus series and the service's own", () => {
    for (const name of [
      "grpc_server_started_total",
      "grpc_server_handled_total",
      "grpc_server_msg_received_total",
      "grpc_server_msg_sent_total",
      "grpc_server_handling_seconds_bucket",
      "authz_route_decisions_total",
      "authz_change_feed_lag_seconds",
      "authz_serving",
    ]) {
      expect(scrape.has(name), name).toBe(true);
    }
    expect(scrape.get("grpc_server_handled_total")).toEqual(
      new Set(["grpc_type", "grpc_service", "grpc_method", "grpc_code", "transport"]),
    );
  });

  it("every metric and label the dashboard reads is in it", () => {
    expect(missingIn(dashboardQueries())).toEqual([]);
  });

  it("every metric and label the alert rules read is in it, and each rule says what to do", () => {
    expect(missingIn(ruleQueries())).toEqual([]);
    expect(
      rules()
        .map((rule) => rule.alert)
        .sort(),
    ).toEqual(
      [
        "FlipAuthzChangeFeedDown",
        "FlipAuthzChangeFeedLag",
        "FlipAuthzErrorRatio",
        "FlipAuthzHighLatency",
        "FlipAuthzNotServing",
      ].sort(),
    );
    for (const rule of rules()) {
      expect(rule.for, String(rule.alert)).toMatch(/^\d+[smh]$/);
      expect((rule.labels as Node).severity, String(rule.alert)).toMatch(/^(critical|warning)$/);
      expect(String((rule.annotations as Node).summary), String(rule.alert)).not.toBe("");
      expect(String((rule.annotations as Node).description), String(rule.alert)).not.toBe("");
    }
  });

  it("a name or label not in the scrape is reported (the check can fail)", () => {
    const probe = (expression: string) => missingIn([{ where: "probe", names: namesIn(expression) }]);
    expect(probe('rate(grpc_server_handled_total{code="OK"}[5m])')).toEqual([
      "probe: grpc_server_handled_total{code}",
    ]);
    expect(probe("sum(rate(authz_rpc_handled_total[5m]))")).toEqual(["probe: authz_rpc_handled_total"]);
    // A histogram is read through its _bucket, _sum and _count series; the bare name selects nothing.
    expect(probe("grpc_server_handling_seconds")).toEqual(["probe: grpc_server_handling_seconds"]);
    expect(probe("sum by (method) (grpc_server_handling_seconds_count)")).toEqual(["probe: by/on (method)"]);
  });
});
