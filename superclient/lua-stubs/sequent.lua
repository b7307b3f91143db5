---@meta sequent
-- Editor stubs of the Lua API a Sequent service script sees (superclient/README.md, "Lua API"),
-- and of the test API of `superclient test`, for the Lua language server (LuaLS): with this
-- file in the workspace (or listed in `.luarc.json`'s `workspace.library`), an editor completes
-- `bus:`, `redis:` and friends and checks their arguments. Nothing here runs.

---@alias sequent.Json table|string|number|boolean

---@class sequent.Meta
---@field id string event id
---@field seq integer position in the stream
---@field version integer the key's version of this event (the first is 0)
---@field time string UTC, RFC 3339
---@field correlation string
---@field causation string|nil id of the event whose handler sent this one
---@field producer string service type that appended it
---@field producer_instance string|nil
---@field partition integer|nil
---@field attempt integer|nil delivery count
---@field redelivered boolean may have been handled before (its sends stored)
---@field rebuild boolean|nil true in rebuilds
---@field released boolean|nil true when an operator released its parked key

---@class sequent.Event
---@field id string
---@field type string
---@field key string
---@field version integer
---@field seq integer
---@field time string
---@field correlation string
---@field causation string|nil
---@field producer string
---@field data table

---@class sequent.Receipt
---@field status "ok"|"conflict"|"aborted"|"invalid"
---@field id string
---@field key string
---@field seq integer|nil (ok)
---@field version integer|nil (ok)
---@field duplicate boolean|nil (ok) a retry of a stored id
---@field expected integer|nil (conflict)
---@field current_version integer|nil (conflict) the key's last version, nil if it has none
---@field next_version integer|nil (conflict) the version the next append must expect
---@field reason string|nil (invalid)

---@class sequent.Declaration
---@field appends string[]|nil event types the service may append
---@field sensitive string[]|nil data fields readers never see
---@field env string[]|nil environment variables bus:env may read
---@field mints_tokens boolean|nil whether crypto.token works
---@field http table|nil HTTP exposure

---@alias sequent.Handler fun(event_type: string, key: string, correlation: string, data: table, meta: sequent.Meta)
---@alias sequent.ReceiptListener fun(status: string, event_type: string, key: string, correlation: string, data: table, receipt: sequent.Receipt)
---@alias sequent.Route fun(method: string, path: string, params: table<string, string>, body: any, query: table<string, string>, headers: table<string, string>, peer: string|nil): integer, (table|string|nil)

---The service: registration, sends, stream reads.
---@class sequent.Bus
bus = {}

---Names the service type (required, once, at the top level) and declares its rights.
---@param service string lowercase letters, digits, `-`, `_`
---@param declaration? sequent.Declaration
function bus:register(service, declaration) end

---A live handler of one event type, or of every type with `"*"` (a listener of the event's own
---type wins over it). Sticky per key, effectively once, parked after repeated failures.
---@param event_type string
---@param fn sequent.Handler
---@param options? {rebuild: boolean?, rerun_on_conflict: boolean?}
function bus:add_event_listener(event_type, fn, options) end

---A handler used in rebuilds (its type is also delivered live).
---@param event_type string
---@param fn sequent.Handler
function bus:add_rebuild_handler(event_type, fn) end

---Called after the store answered a send of this type (from a handler or a route). `status`:
---`ok`, `conflict`, `aborted` (or the original's `success`/`inconsistent` for scripts that
---compare with `"inconsistent"`).
---@param event_type string
---@param fn sequent.ReceiptListener
function bus:add_receipt_listener(event_type, fn) end

---An HTTP route; `{name}` segments become `params.name`. Returns (status, table|string|nil).
---@param path string
---@param method "GET"|"POST"|"PUT"|"PATCH"|"DELETE"|"HEAD"|"OPTIONS"
---@param fn sequent.Route
function bus:add_route(path, method, fn) end

---Appends an event. In a handler: buffered, sent as one atomic batch when it succeeds, returns
---the derived id. In a route: sent at once, returns the receipt. In a rebuild: ignored.
---@param event_type string
---@param key string
---@param expect integer|"new"|"any"|boolean version of the new event; true = any; false = after the last one this service knows of
---@param correlation string|nil nil: the handled event's (handlers) or a new one (routes)
---@param data table
---@param options? {id: string?} routes only: the event id
---@return string|sequent.Receipt|nil
function bus:send(event_type, key, expect, correlation, data, options) end

---@return string name of this instance
function bus:instance() end

---@return string the service type
function bus:service() end

---The key's last stored event (read from the stream, not a projection).
---@param key string
---@return sequent.Event|nil
function bus:last_event(key) end

---The key's events after stream position `seq`, oldest first.
---@param key string
---@param seq integer
---@param limit? integer default 1000
---@return sequent.Event[]
function bus:events_after(key, seq, limit) end

---Routes only: calls `fn` until it returns true (then true) or the timeout passes (false).
---@param timeout_ms integer at most 60000
---@param fn fun(): boolean
---@return boolean
function bus:wait(timeout_ms, fn) end

---A declared environment variable (`bus:register(name, {env = {...}})`).
---@param name string
---@return string|nil
function bus:env(name) end

---At load: serve files of `dir` (relative to the script) under `prefix` for GET/HEAD no route matched.
---@param prefix string
---@param dir string
---@param options? {fallback: string?, exclude: string[]?}
function bus:serve_static(prefix, dir, options) end

---At load: a WebSocket path; `connect` returns `{close = code, reason = ...}`,
---`{topics = {...}, messages = {...}}` or `{events = {types =, keys =, from_seq =}, redact = {fields}}`.
---@param path string
---@param connect fun(path: string, params: table, query: table, headers: table): table
function bus:add_websocket(path, connect) end

---At load: `fn` runs on every instance for every event of `event_type` stored from now on; it may read and push, not send.
---With `opts.topics` ("key", "data.<field>") it pushes only to those topics of the event, and runs only where a socket listens to one.
---@param event_type string
---@param fn sequent.Handler
---@param opts? {topics: string[]}
function bus:add_live_listener(event_type, fn, opts) end

---Sends `message` to this instance's sockets subscribed to any of `topics`.
---@param topics string|string[]
---@param message table|string
function bus:push(topics, message) end

---Sockets on `topic` also subscribe to `new_topic`.
---@param topic string
---@param new_topic string
function bus:join(topic, new_topic) end

---The service's state (values are JSON; writes commit with the call).
---@class sequent.Redis
redis = {}

---@param key string
---@return any
function redis:get(key) end
---@param key string
---@param value sequent.Json
---@param options? {ttl_ms: integer?}
function redis:set(key, value, options) end
---@param key string
function redis:del(key) end
---@param key string
---@return boolean
function redis:exists(key) end
---@param key string
---@param by? integer default 1
---@return integer
function redis:incr(key, by) end
---@param pattern string `*` and `?`
---@return string[]
function redis:keys(pattern) end
---@param key string
---@param field string|integer
---@return any
function redis:hget(key, field) end
---@param key string
---@param field string|integer
---@param value sequent.Json
function redis:hset(key, field, value) end
---@param key string
---@param field string|integer
function redis:hdel(key, field) end
---@param key string
---@param field string|integer
---@param by? integer default 1
---@return integer
function redis:hincr(key, field, by) end
---@param key string
---@return table<string, any>
function redis:hgetall(key) end
---@param key string
---@param value sequent.Json
function redis:rpush(key, value) end
---@param key string
---@param start? integer default 0
---@param stop? integer default -1
---@return any[]
function redis:lrange(key, start, stop) end
---@param key string
---@return integer
function redis:llen(key) end
---@param key string
---@param member sequent.Json
function redis:sadd(key, member) end
---@param key string
---@param member sequent.Json
function redis:srem(key, member) end
---@param key string
---@return any[]
function redis:smembers(key) end
---@param key string
---@param member sequent.Json
---@return boolean
function redis:sismember(key, member) end

---@class sequent.Log
log = {}
---@param ... string|number|boolean|table
function log:trace(...) end
---@param ... string|number|boolean|table
function log:debug(...) end
---@param ... string|number|boolean|table
function log:info(...) end
---@param ... string|number|boolean|table
function log:warn(...) end
---@param ... string|number|boolean|table
function log:error(...) end

---@class sequent.JsonLib
json = {}
---@param value any
---@return string
function json.encode(value) end
---@param text string
---@return any
function json.decode(text) end
---Marks a table as an array (an empty one encodes as `[]`).
---@param t? table
---@return table
function json.array(t) end
---The JSON null.
---@type lightuserdata
json.null = nil

---@class sequent.HttpResponse
---@field status integer
---@field body any a JSON body decoded
---@field headers table<string, string>

---@class sequent.Http
http = {}
---Outbound HTTP.
---@param request {method: string?, url: string, body: (table|string)?, headers: table?, query: table?, timeout_ms: integer?}
---@return sequent.HttpResponse|nil response
---@return string|nil error
function http.request(request) end
---A route of a live instance of another service type.
---@param service string
---@param method string
---@param path string
---@param body? table|string
---@param options? {query: table?, headers: table?, timeout_ms: integer?, retry: boolean?}
---@return sequent.HttpResponse|nil response
---@return string|nil error
function http.call(service, method, path, body, options) end
---How many live instances of a service type the membership shows (0: none runs).
---@param service string
---@return integer
function http.instances(service) end

---@class sequent.Crypto
crypto = {}
---@param password string
---@return string
function crypto.hash_password(password) end
---@param password string
---@param hash string
---@return boolean
function crypto.verify_password(password, hash) end
---@param nbytes integer
---@return string
function crypto.random_hex(nbytes) end
---@return string a UUID v7
function crypto.uuid() end
---@param s string
---@return string
function crypto.sha256_hex(s) end
---Only for services that declare `mints_tokens = true`.
---@param subject string
---@param ttl_seconds integer
---@param claims? table
---@return string
function crypto.token(subject, ttl_seconds, claims) end
---@param token string
---@param options? {issuer: (string|string[])?}
---@return table|nil claims
---@return string|nil reason
function crypto.verify_token(token, options) end
---@param value any
---@param context? string
---@return string sealed `sealed:v1:...`
function crypto.seal(value, context) end
---@param sealed string
---@param context? string
---@return any|nil value
---@return string|nil reason
function crypto.open(sealed, context) end
---@param v any
---@return boolean
function crypto.is_sealed(v) end

---Only with `--admin-api`.
---@class sequent.Admin
admin = {}
---@return table[] every service type's instances and consumer lag
function admin.services() end
---@return table[] parked keys of every service
function admin.parked() end
---@param service string
---@param key string
---@return boolean false when not parked
function admin.release(service, key) end
---Asks a running instance of `service` to rebuild its state from the stream.
---@param service string
---@return boolean|nil true when requested
---@return string|nil reason "unknown" (no state in this Redis) or "busy" (one is requested or running)
function admin.rebuild(service) end
---@param service string
---@return table|nil rebuild {status, done, expected, requested_at, instance, finished_at, error}, nil when none was asked for
function admin.rebuild_status(service) end
---@param events table[]|table a list of events, or one event
---@param rules table<string, string[]> event type (or "*") -> data fields to hide, as the gateway's GET /v1/sensitive gives them
---@return table events the events with those fields "[redacted]"
function admin.redact(events, rules) end

---A route's error answer as RFC 9457 problem details, shaped as every Sequent API's: `type` and
---`title` are derived from `code`; `extra`'s members go beside them.
---@param status integer an error status, 400 to 599
---@param code string the machine-readable reason, e.g. "insufficient funds"
---@param detail? string for a person
---@param extra? table extension members (they cannot replace type, title, status, detail, code)
---@return integer status
---@return table body
function problem(status, code, detail, extra) end

-- HTTP status codes, named as in the Rust `http` crate.
HTTP_CONTINUE = 100
HTTP_SWITCHING_PROTOCOLS = 101
HTTP_PROCESSING = 102
HTTP_OK = 200
HTTP_CREATED = 201
HTTP_ACCEPTED = 202
HTTP_NON_AUTHORITATIVE_INFORMATION = 203
HTTP_NO_CONTENT = 204
HTTP_RESET_CONTENT = 205
HTTP_PARTIAL_CONTENT = 206
HTTP_MULTI_STATUS = 207
HTTP_ALREADY_REPORTED = 208
HTTP_IM_USED = 226
HTTP_MULTIPLE_CHOICES = 300
HTTP_MOVED_PERMANENTLY = 301
HTTP_FOUND = 302
HTTP_SEE_OTHER = 303
HTTP_NOT_MODIFIED = 304
HTTP_USE_PROXY = 305
HTTP_TEMPORARY_REDIRECT = 307
HTTP_PERMANENT_REDIRECT = 308
HTTP_BAD_REQUEST = 400
HTTP_UNAUTHORIZED = 401
HTTP_PAYMENT_REQUIRED = 402
HTTP_FORBIDDEN = 403
HTTP_NOT_FOUND = 404
HTTP_METHOD_NOT_ALLOWED = 405
HTTP_NOT_ACCEPTABLE = 406
HTTP_PROXY_AUTHENTICATION_REQUIRED = 407
HTTP_REQUEST_TIMEOUT = 408
HTTP_CONFLICT = 409
HTTP_GONE = 410
HTTP_LENGTH_REQUIRED = 411
HTTP_PRECONDITION_FAILED = 412
HTTP_PAYLOAD_TOO_LARGE = 413
HTTP_URI_TOO_LONG = 414
HTTP_UNSUPPORTED_MEDIA_TYPE = 415
HTTP_RANGE_NOT_SATISFIABLE = 416
HTTP_EXPECTATION_FAILED = 417
HTTP_IM_A_TEAPOT = 418
HTTP_MISDIRECTED_REQUEST = 421
HTTP_UNPROCESSABLE_ENTITY = 422
HTTP_LOCKED = 423
HTTP_FAILED_DEPENDENCY = 424
HTTP_TOO_EARLY = 425
HTTP_UPGRADE_REQUIRED = 426
HTTP_PRECONDITION_REQUIRED = 428
HTTP_TOO_MANY_REQUESTS = 429
HTTP_REQUEST_HEADER_FIELDS_TOO_LARGE = 431
HTTP_UNAVAILABLE_FOR_LEGAL_REASONS = 451
HTTP_INTERNAL_SERVER_ERROR = 500
HTTP_NOT_IMPLEMENTED = 501
HTTP_BAD_GATEWAY = 502
HTTP_SERVICE_UNAVAILABLE = 503
HTTP_GATEWAY_TIMEOUT = 504
HTTP_HTTP_VERSION_NOT_SUPPORTED = 505
HTTP_VARIANT_ALSO_NEGOTIATES = 506
HTTP_INSUFFICIENT_STORAGE = 507
HTTP_LOOP_DETECTED = 508
HTTP_NOT_EXTENDED = 510
HTTP_NETWORK_AUTHENTICATION_REQUIRED = 511

-- The test API of `superclient test SCRIPT [TESTFILE]` (test files only).

---A test: it starts from an empty state and stream.
---@param name string
---@param fn fun()
function test(name, fn) end

---An event from outside (a command, another service's event), then every handler run it causes.
---@param event_type string
---@param key string
---@param data table
---@param options? {id: string?, correlation: string?, from: string?}
---@return sequent.Event
function given(event_type, key, data, options) end

---Sets a key of the service's state (a JSON value), as an earlier version or an operator left it.
---@param key string
---@param value any
function given_state(key, value) end

---Calls a route as the HTTP server would; its writes commit and its sends are delivered.
---@param method string
---@param path string
---@param body? table
---@param options? {query: table<string, string>?, headers: table<string, string>?}
---@return integer status
---@return any body
function request(method, path, body, options) end

---Fails unless the service sent an event of this type (and key, and with these data fields)
---not matched yet; returns it.
---@param event_type string
---@param key? string
---@param data? table the fields that must match (others are ignored)
---@return sequent.Event
function expect_sent(event_type, key, data) end

---Fails if the service sent anything `expect_sent` has not matched.
function expect_nothing_sent() end

---Fails unless the state's `key` holds `value` (nil: no such key).
---@param key string
---@param value any
function expect_state(key, value) end

---@param actual any
---@param expected any
---@param message? string
function expect_equal(actual, expected, message) end

---@param key string
---@return any value of the state's key (a hash as a table, a list or set as an array)
function state(key) end

---@return table<string, any> every key of the state
function dump_state() end

---@param event_type? string
---@return sequent.Event[] what the service sent
function sent(event_type) end

---@return sequent.Event[] the whole stream
function events() end
