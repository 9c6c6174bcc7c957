// Every YAML file under deploy/ (and every YAML held in a ConfigMap there) parses, and what the files say
// agrees with flip-authz's defaults and with each other: Kubernetes references (selectors, Secrets,
// ConfigMaps, volumes, named ports), flip-authz's own settings (loadConfig accepts them, probes run
// `flip-authz healthcheck`, the route table parses with FLIP's permissions), Envoy's ext_authz set-up and
// clusters, and the Traefik middleware's address. General rules, so a new file is checked as it lands.

import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { PERMISSIONS } from "../../src/authz/flip.ts";
import { loadConfig } from "../../src/config.ts";
import { createRouteTable } from "../../src/guard/routes.ts";

type Node = Record<string, unknown>;
const DEFAULTS = loadConfig({});
const DEPLOY = "deploy";

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? walk(join(dir, entry.name)) : [join(dir, entry.name)],
  );
}

/** Every document of a YAML text; a parse error or warning fails the test naming `where`. */
function documents(text: string, where: string): Node[] {
  return parseAllDocuments(text).map((document, i) => {
    expect(
      document.errors.map((e) => e.message),
      `${where} #${i}`,
    ).toEqual([]);
    expect(
      document.warnings.map((e) => e.message),
      `${where} #${i}`,
    ).toEqual([]);
    return document.toJS() as Node;
  });
}

const node = (value: unknown): Node => (value ?? {}) as Node;
const list = (value: unknown): Node[] => (Array.isArray(value) ? (value as Node[]) : []);

interface Located {
  where: string;
  doc: Node;
}

/** Every YAML document in deploy/, ConfigMap data entries that are YAML included (as `file → key`). */
function collect(): Located[] {
  const found: Located[] = [];
  for (const file of walk(DEPLOY).filter((path) => /\.ya?ml$/.test(path))) {
    documents(readFileSync(file, "utf8"), file).forEach((doc, i) => {
      const where = `${relative(".", file)}#${i}`;
      found.push({ where, doc });
      if (doc.kind === "ConfigMap") {
        for (const [key, value] of Object.entries(node(doc.data))) {
          if (/\.ya?ml$/.test(key)) {
            for (const inner of documents(String(value), `${where} → ${key}`)) {
              found.push({ where: `${where} → ${key}`, doc: inner });
            }
          }
        }
      }
    });
  }
  return found;
}

const all = collect();
const kube = all.filter(({ doc }) => typeof doc.apiVersion === "string" && typeof doc.kind === "string");
const envoys = all.filter(({ doc }) => doc.static_resources !== undefined);
const routeTables = all.filter(({ doc }) => Array.isArray(doc.routes));
const namespaceOf = (doc: Node) => String(node(doc.metadata).namespace ?? "default");
const nameOf = (doc: Node) => String(node(doc.metadata).name);
const find = (kind: string, namespace: string, name: string) =>
  kube.find(({ doc }) => doc.kind === kind && namespaceOf(doc) === namespace && nameOf(doc) === name)?.doc;

/** Workloads with their pod spec and pod labels. */
const WORKLOADS = ["Deployment", "StatefulSet", "DaemonSet", "Pod"];
const workloads = kube
  .filter(({ doc }) => WORKLOADS.includes(String(doc.kind)))
  .map(({ where, doc }) => {
    const template = doc.kind === "Pod" ? doc : node(node(doc.spec).template);
    return {
      where,
      doc,
      namespace: namespaceOf(doc),
      labels: node(node(template.metadata).labels),
      pod: node(template.spec),
    };
  });

const subset = (selector: Node, labels: Node) =>
  Object.keys(selector).length > 0 && Object.entries(selector).every(([key, value]) => labels[key] === value);

/** The pods a label selector picks in a namespace. */
const selected = (namespace: string, selector: Node) =>
  workloads.filter((workload) => workload.namespace === namespace && subset(selector, workload.labels));

const containersOf = (pod: Node) => [...list(pod.initContainers), ...list(pod.containers)];
const portsOf = (pod: Node) => containersOf(pod).flatMap((container) => list(container.ports));

/** A Service's DNS name in the cluster → the Service. */
function serviceAt(host: string): Node | undefined {
  const match = /^([a-z0-9-]+)\.([a-z0-9-]+)\.svc(\.cluster\.local)?$/.exec(host);
  return match ? find("Service", match[2] as string, match[1] as string) : undefined;
}

/** The container port a Service port leads to (by name or number) in the pods it selects. */
function targetOf(service: Node, servicePort: Node): { pod: Node; port: Node; container: Node }[] {
  const target = servicePort.targetPort ?? servicePort.port;
  return selected(namespaceOf(service), node(node(service.spec).selector)).flatMap(({ pod }) =>
    containersOf(pod).flatMap((container) =>
      list(container.ports)
        .filter((port) => port.name === target || port.containerPort === target)
        .map((port) => ({ pod, port, container })),
    ),
  );
}

const isFlipAuthz = (container: Node) => /(^|\/)flip-authz(:|@|$)/.test(String(container.image));

/** A flip-authz container's environment, Secrets' values resolved, as the process would see it. */
function environmentOf(container: Node, namespace: string, where: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const source of list(container.envFrom)) {
    const ref = node(source.secretRef ?? source.configMapRef);
    const kind = source.secretRef ? "Secret" : "ConfigMap";
    const target = find(kind, namespace, String(ref.name));
    expect(target, `${where}: envFrom ${kind} ${String(ref.name)}`).toBeDefined();
    Object.assign(env, node(target?.stringData), node(target?.data));
  }
  for (const entry of list(container.env)) {
    if (entry.value !== undefined) env[String(entry.name)] = String(entry.value);
    const secretRef = node(node(entry.valueFrom).secretKeyRef);
    if (secretRef.name !== undefined) {
      const secret = find("Secret", namespace, String(secretRef.name));
      const values = { ...node(secret?.stringData), ...node(secret?.data) };
      expect(values[String(secretRef.key)], `${where}: ${String(entry.name)} from Secret`).toBeDefined();
      env[String(entry.name)] = String(values[String(secretRef.key)]);
    }
  }
  return env;
}

describe("every YAML file in deploy/", () => {
  it("there are Kubernetes manifests, Envoy configurations and route tables to check", () => {
    expect(kube.length).toBeGreaterThan(5);
    expect(envoys.length).toBeGreaterThanOrEqual(2);
    expect(routeTables.length).toBeGreaterThanOrEqual(2);
  });

  it("each document is something this test knows how to check", () => {
    for (const { where, doc } of all) {
      const known =
        kube.some((k) => k.doc === doc) ||
        envoys.some((e) => e.doc === doc) ||
        routeTables.some((r) => r.doc === doc);
      expect(known, `${where}: neither Kubernetes, Envoy nor a route table`).toBe(true);
    }
  });

  it("route tables parse, name FLIP's permissions, and the copies agree", () => {
    const texts = routeTables.map(({ where, doc }) => {
      const table = createRouteTable(doc, where);
      for (const route of table.routes) {
        if (route.access.kind === "permission")
          expect(Object.keys(PERMISSIONS), where).toContain(route.access.permission);
      }
      return JSON.stringify(doc);
    });
    expect(new Set(texts).size).toBe(1);
  });
});

describe("Kubernetes", () => {
  it("names are unique per kind and namespace", () => {
    const keys = kube.map(({ doc }) => `${String(doc.kind)}/${namespaceOf(doc)}/${nameOf(doc)}`);
    expect(keys.length).toBe(new Set(keys).size);
  });

  it("workloads: selectors match their pods, references resolve, named ports exist", () => {
    for (const { where, doc, namespace, labels, pod } of workloads) {
      if (doc.kind !== "Pod")
        expect(subset(node(node(node(doc.spec).selector).matchLabels), labels), where).toBe(true);
      const portNames = portsOf(pod)
        .map((port) => port.name)
        .filter((name) => name !== undefined);
      expect(portNames.length, `${where}: port names`).toBe(new Set(portNames).size);
      const volumes = list(pod.volumes);
      for (const volume of volumes) {
        const configMap = node(volume.configMap).name;
        if (configMap !== undefined)
          expect(
            find("ConfigMap", namespace, String(configMap)),
            `${where}: ConfigMap ${String(configMap)}`,
          ).toBeDefined();
        const secret = node(volume.secret).secretName;
        if (secret !== undefined)
          expect(
            find("Secret", namespace, String(secret)),
            `${where}: Secret ${String(secret)}`,
          ).toBeDefined();
      }
      for (const container of containersOf(pod)) {
        const at = `${where} ${String(container.name)}`;
        for (const mount of list(container.volumeMounts)) {
          expect(
            volumes.map((volume) => volume.name),
            `${at}: volume ${String(mount.name)}`,
          ).toContain(mount.name);
        }
        environmentOf(container, namespace, at);
        for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
          const check = node(container[probe]);
          const port = node(check.httpGet ?? check.tcpSocket ?? check.grpc).port;
          if (typeof port === "string") expect(portNames, `${at}: ${probe} port`).toContain(port);
        }
      }
    }
  });

  it("flip-authz containers: their settings start the service, ports match, probes run its healthcheck, routes are mounted", () => {
    const containers = workloads.flatMap((w) =>
      containersOf(w.pod)
        .filter(isFlipAuthz)
        .map((c) => ({ ...w, container: c })),
    );
    expect(containers.length).toBeGreaterThan(0);
    for (const { where, namespace, pod, container } of containers) {
      const at = `${where} ${String(container.name)}`;
      const env = environmentOf(container, namespace, at);
      const config = loadConfig(env);
      const ports = Object.fromEntries(list(container.ports).map((port) => [port.name, port.containerPort]));
      expect(ports.grpc, `${at}: grpc port = AUTHZ_GRPC_LISTEN`).toBe(config.grpcListen.port);
      expect(ports.http, `${at}: http port = AUTHZ_HTTP_LISTEN`).toBe(config.httpListen.port);
      for (const probe of ["startupProbe", "readinessProbe"]) {
        const command = list(node(node(container[probe]).exec).command as unknown).map(String);
        expect(command.slice(-2), `${at}: ${probe}`).toEqual(["bin/flip-authz.js", "healthcheck"]);
      }
      const grace = Number(pod.terminationGracePeriodSeconds ?? 30) * 1000;
      expect(grace, `${at}: the kubelet waits longer than the drain`).toBeGreaterThan(config.shutdownGraceMs);
      if (config.routesFile !== undefined) {
        const mount = list(container.volumeMounts).find((m) =>
          config.routesFile?.startsWith(`${String(m.mountPath)}/`),
        );
        expect(mount, `${at}: AUTHZ_ROUTES_FILE is under a mount`).toBeDefined();
        const volume = list(pod.volumes).find((v) => v.name === mount?.name);
        const configMap = find("ConfigMap", namespace, String(node(volume?.configMap).name));
        const key = config.routesFile.slice(String(mount?.mountPath).length + 1);
        const text = node(configMap?.data)[key];
        expect(text, `${at}: ${key} in the mounted ConfigMap`).toBeDefined();
        const table = createRouteTable(documents(String(text), at)[0], at);
        if (table.routes.some((route) => route.access.kind !== "public"))
          expect(config.jwt, `${at}: AUTHZ_JWT_ISSUER`).toBeDefined();
      }
    }
  });

  it("Services and PodDisruptionBudgets select pods, and every Service port leads to a container port", () => {
    for (const { where, doc } of kube.filter(({ doc }) => doc.kind === "Service")) {
      expect(
        selected(namespaceOf(doc), node(node(doc.spec).selector)).length,
        `${where}: selects no pod`,
      ).toBeGreaterThan(0);
      for (const port of list(node(doc.spec).ports)) {
        expect(targetOf(doc, port).length, `${where}: port ${String(port.name)}`).toBeGreaterThan(0);
      }
    }
    for (const { where, doc } of kube.filter(({ doc }) => doc.kind === "PodDisruptionBudget")) {
      const pods = selected(namespaceOf(doc), node(node(node(doc.spec).selector).matchLabels));
      expect(pods.length, `${where}: selects no pod`).toBeGreaterThan(0);
      for (const { doc: workload } of pods) {
        expect(Number(node(doc.spec).minAvailable), `${where}: leaves room to evict`).toBeLessThan(
          Number(node(workload.spec).replicas ?? 1),
        );
      }
    }
  });

  it("the Traefik middleware asks a flip-authz Service's http port at /forward-auth and copies the user id", () => {
    const middlewares = kube.filter(
      ({ doc }) => doc.kind === "Middleware" && node(doc.spec).forwardAuth !== undefined,
    );
    expect(middlewares.length).toBeGreaterThan(0);
    for (const { where, doc } of middlewares) {
      const forwardAuth = node(node(doc.spec).forwardAuth);
      const url = new URL(String(forwardAuth.address));
      expect(url.pathname, where).toBe("/forward-auth");
      expect(forwardAuth.trustForwardHeader, where).toBe(false);
      expect(list(forwardAuth.authResponseHeaders).map(String), where).toContain("X-Flip-User-Id");
      const service = serviceAt(url.hostname);
      expect(service, `${where}: ${url.hostname} is a Service in deploy/`).toBeDefined();
      const port = list(node(service?.spec).ports).find((p) => p.port === Number(url.port));
      expect(port, `${where}: the Service has port ${url.port}`).toBeDefined();
      const targets = targetOf(service as Node, port as Node);
      expect(targets.length).toBeGreaterThan(0);
      for (const { port: containerPort, container } of targets) {
        expect(isFlipAuthz(container)).toBe(true);
        expect(containerPort.name, `${where}: reaches flip-authz's HTTP listener`).toBe("http");
      }
    }
  });

  it("followers (AUTHZ_UPSTREAM): the upstream is a flip-authz Service's gRPC port that accepts their token; they listen on loopback, asked by the Envoy in their pod", () => {
    const followers = workloads.flatMap((w) =>
      containersOf(w.pod)
        .filter(isFlipAuthz)
        .map((container) => ({ ...w, container, env: environmentOf(container, w.namespace, w.where) }))
        .filter(({ env }) => env.AUTHZ_UPSTREAM !== undefined),
    );
    expect(followers.length).toBeGreaterThan(0);
    for (const { where, namespace, pod, container, env } of followers) {
      const at = `${where} ${String(container.name)}`;
      const config = loadConfig(env);
      const upstream = config.upstream;
      expect(upstream, at).toBeDefined();
      const service = serviceAt(upstream?.host ?? "");
      expect(service, `${at}: ${upstream?.host} is a Service in deploy/`).toBeDefined();
      const port = list(node(service?.spec).ports).find(
        (p) => `${upstream?.host}:${String(p.port)}` === upstream?.target,
      );
      expect(port, `${at}: the Service has the port of ${upstream?.target}`).toBeDefined();
      const targets = targetOf(service as Node, port as Node);
      expect(targets.length).toBeGreaterThan(0);
      for (const { container: upstreamContainer, port: containerPort } of targets) {
        expect(isFlipAuthz(upstreamContainer)).toBe(true);
        expect(containerPort.name, `${at}: reaches the upstream's gRPC listener`).toBe("grpc");
        const upstreamEnv = environmentOf(upstreamContainer, namespaceOf(service as Node), at);
        expect(upstreamEnv.AUTHZ_UPSTREAM, `${at}: the upstream keeps the database`).toBeUndefined();
        const tokens = loadConfig(upstreamEnv).serviceTokens;
        expect(tokens, `${at}: AUTHZ_UPSTREAM_TOKEN is one of the upstream's service tokens`).toContain(
          upstream?.token,
        );
      }
      // A sidecar: reachable from its own pod only, where an Envoy asks it.
      expect(config.grpcListen.host, at).toBe("127.0.0.1");
      expect(config.httpListen.host, at).toBe("127.0.0.1");
      const mounted = new Set(list(pod.volumes).map((volume) => String(node(volume.configMap).name)));
      const podEnvoys = envoys.filter(({ where: w }) =>
        [...mounted].some((name) => {
          const configMap = find("ConfigMap", namespace, name);
          return configMap !== undefined && kube.some((k) => k.doc === configMap && w.startsWith(k.where));
        }),
      );
      expect(podEnvoys.length, `${at}: an Envoy in its pod`).toBeGreaterThan(0);
      for (const { where: envoyAt, doc } of podEnvoys) {
        const cluster = list(node(doc.static_resources).clusters).find((c) => c.name === "flip_authz");
        expect(JSON.stringify(cluster?.load_assignment), envoyAt).toContain(
          `"address":"127.0.0.1","port_value":${config.grpcListen.port}`,
        );
      }
    }
  });
});

describe("Envoy", () => {
  /** Every object under `value` (depth first). */
  function* objects(value: unknown): Generator<Node> {
    if (Array.isArray(value)) for (const item of value) yield* objects(item);
    else if (value !== null && typeof value === "object") {
      yield value as Node;
      for (const item of Object.values(value)) yield* objects(item);
    }
  }

  it.each(envoys.map(({ where, doc }) => [where, doc] as const))(
    "%s: ext_authz fails closed with a timeout, over HTTP/2, to a flip-authz gRPC listener; clusters resolve",
    (where, doc) => {
      const resources = node(doc.static_resources);
      const clusters = new Map(list(resources.clusters).map((cluster) => [String(cluster.name), cluster]));
      expect(clusters.size).toBe(list(resources.clusters).length);
      for (const [name, cluster] of clusters)
        expect(node(cluster.load_assignment).cluster_name, `${where}: ${name}`).toBe(name);
      for (const object of objects(resources.listeners)) {
        if (typeof object.cluster === "string")
          expect(clusters.has(object.cluster), `${where}: route to ${object.cluster}`).toBe(true);
      }
      const managers = [...objects(resources.listeners)].filter((o) => Array.isArray(o.http_filters));
      expect(managers.length).toBeGreaterThan(0);
      for (const manager of managers) {
        const filters = list(manager.http_filters);
        expect(filters.map((f) => f.name)).toContain("envoy.filters.http.ext_authz");
        expect(filters.at(-1)?.name, `${where}: the router comes last`).toBe("envoy.filters.http.router");
        const extAuthz = node(filters.find((f) => f.name === "envoy.filters.http.ext_authz")?.typed_config);
        expect(extAuthz).toMatchObject({ transport_api_version: "V3", failure_mode_allow: false });
        const grpcService = node(extAuthz.grpc_service);
        expect(String(grpcService.timeout), `${where}: a timeout`).toMatch(/^\d+(\.\d+)?s$/);
        const clusterName = String(node(grpcService.envoy_grpc).cluster_name);
        const cluster = clusters.get(clusterName);
        expect(cluster, `${where}: cluster ${clusterName}`).toBeDefined();
        expect(JSON.stringify(cluster), `${where}: ${clusterName} speaks HTTP/2`).toContain(
          "http2_protocol_options",
        );
        const socket = [...objects(cluster?.load_assignment)].find((o) => o.port_value !== undefined) as Node;
        const host = String(socket.address);
        if (/^[\d.]+$/.test(host) || host === "localhost") {
          // Beside flip-authz on its defaults.
          expect(`${host}:${String(socket.port_value)}`, where).toBe(
            `${DEFAULTS.grpcListen.host}:${DEFAULTS.grpcListen.port}`,
          );
        } else {
          const service = serviceAt(host);
          expect(service, `${where}: ${host} is a Service in deploy/`).toBeDefined();
          const port = list(node(service?.spec).ports).find((p) => p.port === socket.port_value);
          expect(port, `${where}: the Service has port ${String(socket.port_value)}`).toBeDefined();
          const targets = targetOf(service as Node, port as Node);
          expect(targets.length).toBeGreaterThan(0);
          for (const { container, port: containerPort } of targets) {
            expect(isFlipAuthz(container)).toBe(true);
            expect(containerPort.name, `${where}: reaches flip-authz's gRPC listener`).toBe("grpc");
          }
        }
      }
    },
  );

  it("an Envoy in a pod listens on a port its container declares", () => {
    for (const { where, doc } of envoys.filter((e) => e.where.includes(" → "))) {
      const configMap = kube.find((k) => where.startsWith(k.where))?.doc as Node;
      const users = workloads.filter((w) =>
        list(w.pod.volumes).some((v) => node(v.configMap).name === nameOf(configMap)),
      );
      expect(users.length, `${where}: a pod mounts it`).toBeGreaterThan(0);
      const listening = [...list(node(doc.static_resources).listeners)].map(
        (l) => node(node(l.address).socket_address).port_value,
      );
      for (const { pod } of users) {
        const declared = portsOf(pod).map((port) => port.containerPort);
        for (const port of listening) expect(declared, where).toContain(port);
      }
    }
  });

  it("the sidecar's configuration is deploy/envoy.yaml with flip-authz reached by its Service", () => {
    const standalone = envoys.find((e) => e.where === "deploy/envoy.yaml#0")?.doc;
    expect(standalone).toBeDefined();
    const withoutAuthzAddress = (doc: Node) => {
      const copy = structuredClone(doc);
      for (const cluster of list(node(copy.static_resources).clusters)) {
        if (cluster.name === "flip_authz") {
          delete cluster.type;
          delete cluster.load_assignment;
        }
      }
      return copy;
    };
    for (const { where, doc } of envoys.filter((e) => e.where !== "deploy/envoy.yaml#0")) {
      expect(withoutAuthzAddress(doc), where).toEqual(withoutAuthzAddress(standalone as Node));
    }
  });

  it("nginx.conf and the Caddyfile call flip-authz's HTTP listener on its default address at /forward-auth", () => {
    const http = `${DEFAULTS.httpListen.host}:${DEFAULTS.httpListen.port}`;
    const nginx = readFileSync(join(DEPLOY, "nginx.conf"), "utf8");
    expect(nginx).toContain(`server ${http};`);
    expect(nginx).toContain("proxy_pass http://flip_authz/forward-auth;");
    expect(nginx).toContain(`proxy_set_header Host ${http};`);
    const caddyfile = readFileSync(join(DEPLOY, "Caddyfile"), "utf8");
    expect(caddyfile).toContain(`forward_auth ${http} {`);
    expect(caddyfile).toContain("uri /forward-auth");
  });
});
