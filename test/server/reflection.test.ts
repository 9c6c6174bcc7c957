// Server reflection through the real buf CLI (v1 and v1alpha): list services and methods, and a call whose
// messages import google/protobuf/timestamp.proto, resolved by reflection alone.

import { execFile } from "node:child_process";
import { resolve } from "node:path";
import { promisify } from "node:util";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthzService } from "../../gen/flip/authz/v1/authz_pb.ts";
import { Health } from "../../gen/grpc/health/v1/health_pb.ts";
import { ExtensionRequestSchema } from "../../gen/grpc/reflection/v1/reflection_pb.ts";
import { createReflectionIndex, REFLECTION_SERVICES } from "../../src/server/reflection.ts";
import { type Fixture, startFixture } from "./fixture.ts";

const run = promisify(execFile);
const BUF = resolve("node_modules/.bin/buf");

describe("reflection index", () => {
  const index = createReflectionIndex([AuthzService, Health, ...REFLECTION_SERVICES]);
  const ask = (question: Parameters<typeof index.answer>[0]) => index.answer(question);
  const files = (answer: ReturnType<typeof ask>) =>
    answer.case === "fileDescriptorResponse"
      ? answer.value.fileDescriptorProto.map((bytes) => fromBinary(FileDescriptorProtoSchema, bytes).name)
      : answer;

  it("finds files by name and by symbol (service, method, message, nested, enum, enum value), with imports", () => {
    const authz = ["flip/authz/v1/authz.proto", "google/protobuf/timestamp.proto"];
    expect(files(ask({ case: "fileByFilename", value: "flip/authz/v1/authz.proto" }))).toEqual(authz);
    for (const symbol of [
      "flip.authz.v1.AuthzService",
      "flip.authz.v1.AuthzService.GetProfile",
      "flip.authz.v1.Profile",
      ".flip.authz.v1.ChangeKind",
      "flip.authz.v1.CHANGE_KIND_PROFILE",
    ]) {
      expect(files(ask({ case: "fileContainingSymbol", value: symbol }))).toEqual(authz);
    }
    expect(
      files(ask({ case: "fileContainingSymbol", value: "grpc.health.v1.HealthCheckResponse.ServingStatus" })),
    ).toEqual(["grpc/health/v1/health.proto"]);
    expect(files(ask({ case: "fileByFilename", value: "google/protobuf/timestamp.proto" }))).toEqual([
      "google/protobuf/timestamp.proto",
    ]);
  });

  it("answers NOT_FOUND errors, extension questions and list_services", () => {
    expect(ask({ case: "fileByFilename", value: "nope.proto" })).toMatchObject({
      case: "errorResponse",
      value: { errorCode: 5 },
    });
    expect(ask({ case: "fileContainingSymbol", value: "nope.X" })).toMatchObject({
      case: "errorResponse",
      value: { errorCode: 5 },
    });
    const extension = create(ExtensionRequestSchema, {
      containingType: "flip.authz.v1.Profile",
      extensionNumber: 100,
    });
    expect(ask({ case: "fileContainingExtension", value: extension })).toMatchObject({
      case: "errorResponse",
      value: { errorCode: 5 },
    });
    expect(ask({ case: "allExtensionNumbersOfType", value: "flip.authz.v1.Profile" })).toEqual({
      case: "allExtensionNumbersResponse",
      value: { baseTypeName: "flip.authz.v1.Profile", extensionNumber: [] },
    });
    expect(ask({ case: undefined, value: undefined })).toMatchObject({
      case: "errorResponse",
      value: { errorCode: 3 },
    });
    expect(ask({ case: "listServices", value: "" })).toEqual({
      case: "listServicesResponse",
      value: {
        service: [
          { name: "flip.authz.v1.AuthzService" },
          { name: "grpc.health.v1.Health" },
          { name: "grpc.reflection.v1.ServerReflection" },
          { name: "grpc.reflection.v1alpha.ServerReflection" },
        ],
      },
    });
    // Serialized descriptors round-trip.
    const answer = ask({ case: "fileByFilename", value: "flip/authz/v1/authz.proto" });
    if (answer.case !== "fileDescriptorResponse") throw new Error("expected files");
    const first = answer.value.fileDescriptorProto[0] as Uint8Array;
    expect(toBinary(FileDescriptorProtoSchema, fromBinary(FileDescriptorProtoSchema, first))).toEqual(first);
  });
});

describe.each(["grpc-v1", "grpc-v1alpha"])("reflection through buf curl (%s)", (protocol) => {
  let f: Fixture;
  beforeAll(async () => {
    f = await startFixture();
  });
  afterAll(async () => {
    await f.close();
  });
  const curl = async (...args: string[]) => {
    const { stdout } = await run(
      BUF,
      ["curl", "--protocol", "grpc", "--http2-prior-knowledge", "--reflect-protocol", protocol, ...args],
      { timeout: 20_000 },
    );
    return stdout;
  };

  it("lists the services", async () => {
    const out = await curl("--list-services", `http://${f.grpcTarget}`);
    expect(out.trim().split("\n").sort()).toEqual([
      "flip.authz.v1.AuthzService",
      "grpc.health.v1.Health",
      "grpc.reflection.v1.ServerReflection",
      "grpc.reflection.v1alpha.ServerReflection",
    ]);
  });

  it("lists the methods", async () => {
    const out = await curl("--list-methods", `http://${f.grpcTarget}`);
    const methods = out.trim().split("\n");
    expect(methods.filter((name) => name.startsWith("flip.authz.v1.AuthzService/"))).toHaveLength(
      AuthzService.methods.length,
    );
    expect(methods).toContain("grpc.health.v1.Health/List");
    expect(methods).toContain("grpc.reflection.v1.ServerReflection/ServerReflectionInfo");
    expect(methods).toContain("flip.authz.v1.AuthzService/GetProfile");
    expect(methods).toContain("flip.authz.v1.AuthzService/WatchChanges");
  });

  it("makes a call whose messages import timestamp.proto, resolved by reflection", async () => {
    const out = await curl(
      "-d",
      '{"userId":"ABC"}',
      `http://${f.grpcTarget}/flip.authz.v1.AuthzService/GetProfile`,
    );
    expect(JSON.parse(out)).toEqual({
      profile: {
        userId: "abc",
        name: "Ada",
        organisation: "FLIP",
        roles: ["Admin"],
        permissions: ["CAN_MANAGE_USERS"],
        createdAt: "2026-01-02T03:04:05Z",
        updatedAt: "2026-01-02T03:04:05Z",
      },
    });
  });

  it("calls the health service by reflection", async () => {
    const out = await curl("-d", '{"service":""}', `http://${f.grpcTarget}/grpc.health.v1.Health/Check`);
    expect(JSON.parse(out)).toEqual({ status: "SERVING" });
  });
});
