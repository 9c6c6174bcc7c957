// gRPC server reflection (grpc.reflection.v1 and v1alpha) answered from the complete file descriptors
// protobuf-es embeds in gen/, each with its transitive imports, so `buf curl` and grpcurl can resolve every
// message. (@grpc/reflection serves files without their imports; see NOTES.md.) Never authenticated.

import type { DescEnum, DescFile, DescMessage, DescService } from "@bufbuild/protobuf";
import { toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { Code } from "@connectrpc/connect";
import type * as grpc from "@grpc/grpc-js";
import * as v1 from "../../gen/grpc/reflection/v1/reflection_pb.ts";
import * as v1alpha from "../../gen/grpc/reflection/v1alpha/reflection_pb.ts";
import { addGrpcService, type GrpcServiceOptions } from "./grpc.ts";

/** The questions and answers both reflection versions share (their messages differ only in package). */
type Question =
  | v1.ServerReflectionRequest["messageRequest"]
  | v1alpha.ServerReflectionRequest["messageRequest"];

type Answer =
  | { case: "fileDescriptorResponse"; value: { fileDescriptorProto: Uint8Array[] } }
  | { case: "allExtensionNumbersResponse"; value: { baseTypeName: string; extensionNumber: number[] } }
  | { case: "listServicesResponse"; value: { service: { name: string }[] } }
  | { case: "errorResponse"; value: { errorCode: number; errorMessage: string } };

/** An index of the served services' files: by file name and by every symbol they declare. */
export interface ReflectionIndex {
  answer(question: Question): Answer;
}

/**
 * Builds the index for `services` (the names list_services reports). Their files and all transitive
 * imports are indexed; extra `files` (e.g. ones only referenced by name) may be added.
 */
export function createReflectionIndex(services: DescService[], files: DescFile[] = []): ReflectionIndex {
  const byName = new Map<string, DescFile>();
  const bySymbol = new Map<string, DescFile>();
  const messages = new Set<string>();
  const encoded = new Map<DescFile, Uint8Array>();

  const addMessage = (file: DescFile, message: DescMessage) => {
    bySymbol.set(message.typeName, file);
    messages.add(message.typeName);
    for (const field of message.fields) bySymbol.set(`${message.typeName}.${field.name}`, file);
    for (const oneof of message.oneofs) bySymbol.set(`${message.typeName}.${oneof.name}`, file);
    for (const nested of message.nestedMessages) addMessage(file, nested);
    for (const nested of message.nestedEnums) addEnum(file, nested);
    for (const extension of message.nestedExtensions) bySymbol.set(extension.typeName, file);
  };
  const addEnum = (file: DescFile, desc: DescEnum) => {
    bySymbol.set(desc.typeName, file);
    // Enum values live in the scope enclosing the enum, as in protoc.
    const scope = desc.typeName.includes(".") ? desc.typeName.slice(0, desc.typeName.lastIndexOf(".")) : "";
    for (const value of desc.values) bySymbol.set(scope === "" ? value.name : `${scope}.${value.name}`, file);
  };
  const addFile = (file: DescFile) => {
    const name = file.proto.name; // file.name lacks ".proto"
    if (byName.has(name)) return;
    byName.set(name, file);
    for (const dependency of file.dependencies) addFile(dependency);
    for (const message of file.messages) addMessage(file, message);
    for (const desc of file.enums) addEnum(file, desc);
    for (const extension of file.extensions) bySymbol.set(extension.typeName, file);
    for (const service of file.services) {
      bySymbol.set(service.typeName, file);
      for (const method of service.methods) bySymbol.set(`${service.typeName}.${method.name}`, file);
    }
  };
  for (const service of services) addFile(service.file);
  for (const file of files) addFile(file);
  const serviceNames = [...new Set(services.map((service) => service.typeName))].sort();

  const encode = (file: DescFile): Uint8Array => {
    let bytes = encoded.get(file);
    if (!bytes) {
      bytes = toBinary(FileDescriptorProtoSchema, file.proto);
      encoded.set(file, bytes);
    }
    return bytes;
  };
  /** The file first, then every file it imports, directly or not, each once. */
  const withDependencies = (file: DescFile): Answer => {
    const seen = new Set<DescFile>();
    const order: DescFile[] = [];
    const visit = (current: DescFile) => {
      if (seen.has(current)) return;
      seen.add(current);
      order.push(current);
      for (const dependency of current.dependencies) visit(dependency);
    };
    visit(file);
    return { case: "fileDescriptorResponse", value: { fileDescriptorProto: order.map(encode) } };
  };
  const error = (code: Code, message: string): Answer => ({
    case: "errorResponse",
    value: { errorCode: code, errorMessage: message },
  });

  return {
    answer(question) {
      switch (question.case) {
        case "listServices":
          return { case: "listServicesResponse", value: { service: serviceNames.map((name) => ({ name })) } };
        case "fileByFilename": {
          const file = byName.get(question.value);
          return file ? withDependencies(file) : error(Code.NotFound, `file not found: ${question.value}`);
        }
        case "fileContainingSymbol": {
          const symbol = question.value.replace(/^\./, "");
          const file = bySymbol.get(symbol);
          return file ? withDependencies(file) : error(Code.NotFound, `symbol not found: ${symbol}`);
        }
        case "allExtensionNumbersOfType": {
          const type = question.value.replace(/^\./, "");
          // None of the served files declares extensions, so a known type has none.
          return messages.has(type)
            ? { case: "allExtensionNumbersResponse", value: { baseTypeName: type, extensionNumber: [] } }
            : error(Code.NotFound, `type not found: ${type}`);
        }
        case "fileContainingExtension":
          return error(
            Code.NotFound,
            `extension not found: ${question.value.containingType} ${question.value.extensionNumber}`,
          );
        default:
          return error(Code.InvalidArgument, "no question asked: set one of the message_request fields");
      }
    },
  };
}

/** grpc.reflection.v1.ServerReflection over an index. */
export function createReflectionV1(index: ReflectionIndex): ServiceImpl<typeof v1.ServerReflection> {
  return {
    async *serverReflectionInfo(requests) {
      for await (const request of requests) {
        yield {
          validHost: request.host,
          originalRequest: request,
          messageResponse: index.answer(request.messageRequest),
        };
      }
    },
  };
}

/** grpc.reflection.v1alpha.ServerReflection over an index (the older name clients still try first). */
export function createReflectionV1alpha(
  index: ReflectionIndex,
): ServiceImpl<typeof v1alpha.ServerReflection> {
  return {
    async *serverReflectionInfo(requests) {
      for await (const request of requests) {
        yield {
          validHost: request.host,
          originalRequest: request,
          messageResponse: index.answer(request.messageRequest),
        };
      }
    },
  };
}

/** The reflection services themselves, to list alongside the app's services. */
export const REFLECTION_SERVICES: DescService[] = [v1.ServerReflection, v1alpha.ServerReflection];

/**
 * Serves both reflection versions on a grpc-js server, describing `services` (pass every service the
 * server offers, health and reflection included), without interceptors: reflection is never authenticated.
 */
export function addReflectionService(
  server: grpc.Server,
  services: DescService[],
  options: Omit<GrpcServiceOptions, "interceptors">,
): void {
  const index = createReflectionIndex(services);
  addGrpcService(server, v1.ServerReflection, createReflectionV1(index), options);
  addGrpcService(server, v1alpha.ServerReflection, createReflectionV1alpha(index), options);
}
