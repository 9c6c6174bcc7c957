// What a request id the service made looks like: a random (version 4) UUID, from node:crypto's randomUUID.

export const MADE_REQUEST_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
