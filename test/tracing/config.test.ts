// The OTEL_* variables as config.ts reads them: when tracing is on at all, where spans go, the headers,
// the resource, the sampler, and a ConfigError naming the variable (never echoing its value) for bad ones.

import { describe, expect, it } from "vitest";
import { ConfigError, loadTracing } from "../../src/config.ts";

const ENDPOINT = { OTEL_EXPORTER_OTLP_ENDPOINT: "http://otel-collector.monitoring:4318" };

function refusal(env: Record<string, string>): ConfigError {
  try {
    loadTracing(env);
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error("accepted");
}

describe("loadTracing", () => {
  it("is off without an endpoint, with OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none", () => {
    expect(loadTracing({})).toBeUndefined();
    expect(loadTracing({ OTEL_TRACES_SAMPLER: "nonsense" })).toBeUndefined();
    expect(loadTracing({ ...ENDPOINT, OTEL_SDK_DISABLED: "TRUE" })).toBeUndefined();
    expect(loadTracing({ ...ENDPOINT, OTEL_TRACES_EXPORTER: "none" })).toBeUndefined();
  });

  it("sends to <endpoint>/v1/traces, or to the traces endpoint as given", () => {
    expect(loadTracing(ENDPOINT)?.url).toBe("http://otel-collector.monitoring:4318/v1/traces");
    expect(loadTracing({ OTEL_EXPORTER_OTLP_ENDPOINT: "https://otel.example/base/" })?.url).toBe(
      "https://otel.example/base/v1/traces",
    );
    expect(
      loadTracing({ ...ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://other:4318/custom" })?.url,
    ).toBe("http://other:4318/custom");
  });

  it("defaults: service flip-authz, parentbased_always_on, the specification's batch settings", () => {
    expect(loadTracing(ENDPOINT)).toEqual({
      url: "http://otel-collector.monitoring:4318/v1/traces",
      headers: {},
      serviceName: "flip-authz",
      resourceAttributes: {},
      sampler: { kind: "parentbased_always_on", ratio: 1 },
      batch: {
        scheduledDelayMillis: 5000,
        exportTimeoutMillis: 30000,
        maxQueueSize: 2048,
        maxExportBatchSize: 512,
      },
    });
  });

  it("decodes headers (the traces ones win) and resource attributes; OTEL_SERVICE_NAME wins over service.name", () => {
    const config = loadTracing({
      ...ENDPOINT,
      OTEL_EXPORTER_OTLP_HEADERS: "api-key=a%20b,x-team=flip",
      OTEL_EXPORTER_OTLP_TRACES_HEADERS: "api-key=traces",
      OTEL_RESOURCE_ATTRIBUTES: "service.name=from-attributes, deployment.environment.name=prod%2Ceu",
    });
    expect(config?.headers).toEqual({ "api-key": "traces", "x-team": "flip" });
    expect(config?.resourceAttributes).toEqual({
      "service.name": "from-attributes",
      "deployment.environment.name": "prod,eu",
    });
    expect(config?.serviceName).toBe("from-attributes");
    expect(
      loadTracing({ ...ENDPOINT, OTEL_SERVICE_NAME: "authz-eu", OTEL_RESOURCE_ATTRIBUTES: "service.name=x" })
        ?.serviceName,
    ).toBe("authz-eu");
  });

  it("reads the ratio for the ratio samplers only", () => {
    expect(
      loadTracing({
        ...ENDPOINT,
        OTEL_TRACES_SAMPLER: "parentbased_traceidratio",
        OTEL_TRACES_SAMPLER_ARG: "0.25",
      })?.sampler,
    ).toEqual({ kind: "parentbased_traceidratio", ratio: 0.25 });
    expect(
      loadTracing({ ...ENDPOINT, OTEL_TRACES_SAMPLER: "always_off", OTEL_TRACES_SAMPLER_ARG: "bogus" })
        ?.sampler,
    ).toEqual({ kind: "always_off", ratio: 1 });
  });

  it.each([
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: "not a url" }, "OTEL_EXPORTER_OTLP_ENDPOINT"],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: "grpc://collector:4317" }, "OTEL_EXPORTER_OTLP_ENDPOINT"],
    [
      { ...ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "//traces.internal" },
      "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ],
    [{ ...ENDPOINT, OTEL_SDK_DISABLED: "maybe" }, "OTEL_SDK_DISABLED"],
    [{ ...ENDPOINT, OTEL_TRACES_EXPORTER: "zipkin" }, "OTEL_TRACES_EXPORTER"],
    [{ ...ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "http/json" }, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"],
    [{ ...ENDPOINT, OTEL_TRACES_SAMPLER: "jaeger_remote" }, "OTEL_TRACES_SAMPLER"],
    [
      { ...ENDPOINT, OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "half" },
      "OTEL_TRACES_SAMPLER_ARG",
    ],
    [
      { ...ENDPOINT, OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "-0.1" },
      "OTEL_TRACES_SAMPLER_ARG",
    ],
    [{ ...ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS: "secret-value-without-key" }, "OTEL_EXPORTER_OTLP_HEADERS"],
    [
      { ...ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_HEADERS: "bad key=secret" },
      "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    ],
    [{ ...ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS: "api-key=%E0%A4%A" }, "OTEL_EXPORTER_OTLP_HEADERS"],
    [{ ...ENDPOINT, OTEL_RESOURCE_ATTRIBUTES: "=value" }, "OTEL_RESOURCE_ATTRIBUTES"],
    [{ ...ENDPOINT, OTEL_BSP_SCHEDULE_DELAY: "soon" }, "OTEL_BSP_SCHEDULE_DELAY"],
    [
      { ...ENDPOINT, OTEL_BSP_MAX_QUEUE_SIZE: "10", OTEL_BSP_MAX_EXPORT_BATCH_SIZE: "20" },
      "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    ],
  ])("%o is refused naming %s", (env, variable) => {
    const error = refusal(env);
    expect(error.variable).toBe(variable);
    expect(error.message.startsWith(`${variable}: `)).toBe(true);
    for (const value of Object.values(env)) {
      if (value.length > 6) expect(error.message).not.toContain(value);
    }
  });
});
