// Transmission RPC client (rpc-spec.md, RPC version 17, Transmission 4.0 method and field names).
//
// The only way this page talks to the daemon: JSON POSTs to /transmission/rpc. The server answers a
// request without the right X-Transmission-Session-Id with HTTP 409 and the id in that same header;
// the request is then sent again with it (the CSRF protection of section 2.3.1).

/** Path of the RPC endpoint, the same for torrentcore and Transmission. */
export const RPC_PATH = "/transmission/rpc";

/** Header carrying the CSRF token. */
const SESSION_HEADER = "X-Transmission-Session-Id";

/** 409 answers accepted in a row for one request: one is normal (new or expired id), two means the
 * server rotated its id between our two requests; more would be a loop. */
const MAX_HANDSHAKES = 3;

/** A request that gets no answer within this time fails (the page keeps polling). */
const REQUEST_TIMEOUT_MS = 20000;

/** An RPC call failed: transport (network, HTTP status) or an RPC "result" other than "success". */
export class RpcError extends Error {
  /**
   * @param {string} message what went wrong, shown to the user as is
   * @param {{status?: number, result?: string}} detail HTTP status or the RPC result string
   */
  constructor(message, detail = {}) {
    super(message);
    this.name = "RpcError";
    this.status = detail.status;
    this.result = detail.result;
  }
}

export class RpcClient {
  /** @param {string} url the RPC endpoint (default: /transmission/rpc on this page's origin) */
  constructor(url = RPC_PATH) {
    this.url = url;
    this.sessionId = "";
    this.tag = 0;
  }

  /**
   * Call one RPC method; resolves with its `arguments` object, rejects with an RpcError.
   * @param {string} method e.g. "torrent-get"
   * @param {object} args the request's arguments
   */
  async call(method, args = {}) {
    const tag = ++this.tag;
    const body = JSON.stringify({ method, arguments: args, tag });
    for (let attempt = 0; attempt <= MAX_HANDSHAKES; attempt++) {
      const response = await this.post(body);
      if (response.status === 409) {
        const id = response.headers.get(SESSION_HEADER);
        if (!id) throw new RpcError("The server refused the request (409) without a session id.", { status: 409 });
        this.sessionId = id;
        continue;
      }
      if (response.status === 401) throw new RpcError("Not authorised: reload the page to log in again.", { status: 401 });
      if (!response.ok) throw new RpcError(`The server answered HTTP ${response.status}.`, { status: response.status });
      let reply;
      try {
        reply = await response.json();
      } catch {
        throw new RpcError("The server's answer was not JSON.", { status: response.status });
      }
      if (reply.result !== "success") {
        throw new RpcError(String(reply.result || "no result in the answer"), { result: reply.result });
      }
      return reply.arguments || {};
    }
    throw new RpcError("The server kept changing its session id (409 answers in a row).", { status: 409 });
  }

  /** One HTTP POST with the current session id, bounded by REQUEST_TIMEOUT_MS. */
  async post(body) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    const headers = { "Content-Type": "application/json" };
    if (this.sessionId) headers[SESSION_HEADER] = this.sessionId;
    try {
      return await fetch(this.url, {
        method: "POST", body, headers, credentials: "same-origin", cache: "no-store", signal: controller.signal,
      });
    } catch (err) {
      const why = err && err.name === "AbortError" ? "no answer in time" : "cannot reach the daemon";
      throw new RpcError(`RPC failed: ${why}.`);
    } finally {
      clearTimeout(timer);
    }
  }
}
