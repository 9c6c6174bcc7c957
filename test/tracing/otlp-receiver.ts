// A minimal OTLP/HTTP receiver for tests: a node:http server taking POST /v1/traces (protobuf, gzip or not),
// decoding each ExportTraceServiceRequest with a small reader of the few OTLP fields the tests look at
// (opentelemetry/proto/collector/trace/v1 and trace/v1, common/v1 field numbers) and keeping the spans.

import { once } from "node:events";
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { gunzipSync } from "node:zlib";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";

export type AttributeValue = string | number | boolean | bigint | AttributeValue[] | undefined;

export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  /** "" for a root span. */
  parentSpanId: string;
  name: string;
  /** OTLP SpanKind: 1 internal, 2 server, 3 client. */
  kind: number;
  attributes: Record<string, AttributeValue>;
  /** OTLP StatusCode: 0 unset, 1 ok, 2 error. */
  status: { code: number; message: string };
  resource: Record<string, AttributeValue>;
  scope: string;
}

export interface OtlpReceiver {
  /** The base URL, as OTEL_EXPORTER_OTLP_ENDPOINT takes it. */
  readonly endpoint: string;
  readonly spans: ReceivedSpan[];
  /** Paths and content types of every request received. */
  readonly requests: { path: string; contentType: string | undefined; headers: IncomingMessage["headers"] }[];
  close(): Promise<void>;
}

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");

function anyValue(bytes: Uint8Array): AttributeValue {
  const reader = new BinaryReader(bytes);
  let value: AttributeValue;
  while (reader.pos < reader.len) {
    const [field, wire] = reader.tag();
    if (field === 1) value = reader.string();
    else if (field === 2) value = reader.bool();
    else if (field === 3) value = Number(reader.int64());
    else if (field === 4) value = reader.double();
    else if (field === 5) {
      const array = new BinaryReader(reader.bytes());
      const items: AttributeValue[] = [];
      while (array.pos < array.len) {
        const [itemField, itemWire] = array.tag();
        if (itemField === 1) items.push(anyValue(array.bytes()));
        else array.skip(itemWire);
      }
      value = items;
    } else reader.skip(wire);
  }
  return value;
}

/** A KeyValue into `into`. */
function keyValue(bytes: Uint8Array, into: Record<string, AttributeValue>): void {
  const reader = new BinaryReader(bytes);
  let key = "";
  let value: AttributeValue;
  while (reader.pos < reader.len) {
    const [field, wire] = reader.tag();
    if (field === 1) key = reader.string();
    else if (field === 2) value = anyValue(reader.bytes());
    else reader.skip(wire);
  }
  into[key] = value;
}

function resourceOf(bytes: Uint8Array): Record<string, AttributeValue> {
  const reader = new BinaryReader(bytes);
  const attributes: Record<string, AttributeValue> = {};
  while (reader.pos < reader.len) {
    const [field, wire] = reader.tag();
    if (field === 1) keyValue(reader.bytes(), attributes);
    else reader.skip(wire);
  }
  return attributes;
}

function statusOf(bytes: Uint8Array): { code: number; message: string } {
  const reader = new BinaryReader(bytes);
  const status = { code: 0, message: "" };
  while (reader.pos < reader.len) {
    const [field, wire] = reader.tag();
    if (field === 2) status.message = reader.string();
    else if (field === 3) status.code = reader.int32();
    else reader.skip(wire);
  }
  return status;
}

function spanOf(bytes: Uint8Array, resource: Record<string, AttributeValue>, scope: string): ReceivedSpan {
  const reader = new BinaryReader(bytes);
  const span: ReceivedSpan = {
    traceId: "",
    spanId: "",
    parentSpanId: "",
    name: "",
    kind: 0,
    attributes: {},
    status: { code: 0, message: "" },
    resource,
    scope,
  };
  while (reader.pos < reader.len) {
    const [field, wire] = reader.tag();
    if (field === 1) span.traceId = hex(reader.bytes());
    else if (field === 2) span.spanId = hex(reader.bytes());
    else if (field === 4) span.parentSpanId = hex(reader.bytes());
    else if (field === 5) span.name = reader.string();
    else if (field === 6) span.kind = reader.int32();
    else if (field === 9) keyValue(reader.bytes(), span.attributes);
    else if (field === 15) span.status = statusOf(reader.bytes());
    else reader.skip(wire);
  }
  return span;
}

function scopeSpans(bytes: Uint8Array, resource: Record<string, AttributeValue>, into: ReceivedSpan[]): void {
  const reader = new BinaryReader(bytes);
  let scope = "";
  const raw: Uint8Array[] = [];
  while (reader.pos < reader.len) {
    const [field, wire] = reader.tag();
    if (field === 1) {
      const scopeReader = new BinaryReader(reader.bytes());
      while (scopeReader.pos < scopeReader.len) {
        const [scopeField, scopeWire] = scopeReader.tag();
        if (scopeField === 1) scope = scopeReader.string();
        else scopeReader.skip(scopeWire);
      }
    } else if (field === 2) raw.push(reader.bytes());
    else reader.skip(wire);
  }
  for (const span of raw) into.push(spanOf(span, resource, scope));
}

/** The spans of one ExportTraceServiceRequest. */
export function decodeTraces(bytes: Uint8Array): ReceivedSpan[] {
  const spans: ReceivedSpan[] = [];
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [field, wire] = reader.tag();
    if (field !== 1 || wire !== WireType.LengthDelimited) {
      reader.skip(wire);
      continue;
    }
    const resourceSpans = new BinaryReader(reader.bytes());
    let resource: Record<string, AttributeValue> = {};
    const scopes: Uint8Array[] = [];
    while (resourceSpans.pos < resourceSpans.len) {
      const [rsField, rsWire] = resourceSpans.tag();
      if (rsField === 1) resource = resourceOf(resourceSpans.bytes());
      else if (rsField === 2) scopes.push(resourceSpans.bytes());
      else resourceSpans.skip(rsWire);
    }
    for (const scope of scopes) scopeSpans(scope, resource, spans);
  }
  return spans;
}

export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const spans: ReceivedSpan[] = [];
  const requests: OtlpReceiver["requests"] = [];
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      requests.push({
        path: request.url ?? "",
        contentType: request.headers["content-type"],
        headers: request.headers,
      });
      let body = Buffer.concat(chunks);
      if (request.headers["content-encoding"] === "gzip") body = gunzipSync(body);
      if (request.method !== "POST" || request.url !== "/v1/traces") {
        response.writeHead(404).end();
        return;
      }
      spans.push(...decodeTraces(body));
      // An empty ExportTraceServiceResponse: everything accepted.
      response.writeHead(200, { "content-type": "application/x-protobuf" }).end();
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    spans,
    requests,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
