package kv

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Cluster is what the HTTP API needs from the node runtime. Both calls may
// be made by many handlers at once.
type Cluster interface {
	// Propose replicates data through Raft and returns once the entry is
	// committed and applied on this node, with its index and the state
	// machine's result (what Store.Apply returned). On a follower the node
	// forwards the proposal to the leader (Raft's MsgProp), so every node
	// accepts writes.
	Propose(ctx context.Context, data []byte) (index uint64, result any, err error)
	// ReadIndex returns once this node has applied everything committed
	// before the call (linearizable read barrier).
	ReadIndex(ctx context.Context) error
}

// Defaults of HandlerConfig.
const (
	// DefaultMaxValueBytes is the default HandlerConfig.MaxValueBytes.
	DefaultMaxValueBytes = 1 << 20
	// DefaultMaxKeyBytes is the default HandlerConfig.MaxKeyBytes.
	DefaultMaxKeyBytes = 1 << 10
	// DefaultRequestTimeout is the default HandlerConfig.RequestTimeout.
	DefaultRequestTimeout = 5 * time.Second
	// DefaultListLimit is the default HandlerConfig.ListLimit.
	DefaultListLimit = 100
	// DefaultMaxListLimit is the default HandlerConfig.MaxListLimit.
	DefaultMaxListLimit = 1000
)

// HandlerConfig configures NewHandler. Zero values select the defaults.
//
// The key space is either one Raft group (Store and Cluster) or split over
// several (Shards); exactly one of the two forms must be set.
type HandlerConfig struct {
	// Store is read by GET requests. Required unless Shards is set.
	Store *Store
	// Cluster replicates writes and provides the read barrier. Required
	// unless Shards is set.
	Cluster Cluster
	// Shards, instead of Store and Cluster, splits the key space over
	// len(Shards) Raft groups, 1 to MaxShards: a request for a key goes to
	// Shards[ShardOf(key, len(Shards))], and a listing merges all shards.
	// The order and the count are part of the cluster's contract (see
	// ShardOf): every node must list the same groups in the same order,
	// and each Store must be its own.
	Shards []Shard
	// Status, if set, is served as JSON on GET /status; otherwise /status
	// is 404.
	Status func() any
	// Metrics, if set, serves GET /metrics (typically the node's promhttp
	// handler); otherwise /metrics is 404.
	Metrics http.Handler
	// MaxValueBytes bounds a PUT body; larger bodies get 413. Default
	// DefaultMaxValueBytes (1 MiB). The node may reject a smaller proposal
	// with node.ErrTooLarge, which is also 413.
	MaxValueBytes int64
	// MaxKeyBytes bounds the length of a key in bytes; longer keys get 400.
	// Default DefaultMaxKeyBytes (1 KiB).
	MaxKeyBytes int
	// RequestTimeout bounds each Propose and ReadIndex (for a listing over
	// several shards, all their ReadIndex calls together); when it expires
	// the request gets 504. Default DefaultRequestTimeout (5 s).
	RequestTimeout time.Duration
	// ListLimit is the number of keys a listing returns when the request
	// has no limit parameter. Default DefaultListLimit (100).
	ListLimit int
	// MaxListLimit caps the limit parameter; larger values are lowered to
	// it. Default DefaultMaxListLimit (1000).
	MaxListLimit int
	// Healthz, if set, serves GET /healthz: is the process alive and its
	// storage writable (a Kubernetes liveness probe). Readyz, if set,
	// serves GET /readyz: can the node serve requests now (a readiness
	// probe). Both answer 200 "ok" or 503 with the probe's error as a
	// one-line text body, and stay open when Auth is set.
	Healthz, Readyz Probe
	// Auth, if set, requires a bearer token or a verified client
	// certificate on every endpoint except /healthz and /readyz. Default
	// nil: open, for a listener on a loopback address only.
	Auth *Auth
	// Logger receives request failures. Default: discard.
	Logger *slog.Logger
}

// validate fills the defaults and rejects unusable values.
func (c *HandlerConfig) validate() error {
	if err := c.validateShards(); err != nil {
		return err
	}
	switch {
	case c.MaxValueBytes < 0, c.MaxKeyBytes < 0, c.RequestTimeout < 0, c.ListLimit < 0, c.MaxListLimit < 0:
		return errors.New("kv: HandlerConfig sizes, limits and timeouts must not be negative")
	}
	if c.MaxValueBytes == 0 {
		c.MaxValueBytes = DefaultMaxValueBytes
	}
	if c.MaxKeyBytes == 0 {
		c.MaxKeyBytes = DefaultMaxKeyBytes
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.MaxListLimit == 0 {
		c.MaxListLimit = DefaultMaxListLimit
	}
	if c.ListLimit == 0 {
		c.ListLimit = min(DefaultListLimit, c.MaxListLimit)
	}
	if c.ListLimit > c.MaxListLimit {
		return fmt.Errorf("kv: HandlerConfig.ListLimit %d exceeds MaxListLimit %d", c.ListLimit, c.MaxListLimit)
	}
	if c.Auth != nil {
		if err := c.Auth.validate(); err != nil {
			return err
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// validateShards checks that exactly one of the two forms of the key space
// is set, and that it is complete.
func (c *HandlerConfig) validateShards() error {
	if c.Shards == nil {
		switch {
		case c.Store == nil && c.Cluster == nil:
			return errors.New("kv: HandlerConfig needs Store and Cluster, or Shards")
		case c.Store == nil:
			return errors.New("kv: HandlerConfig.Store is required")
		case c.Cluster == nil:
			return errors.New("kv: HandlerConfig.Cluster is required")
		}
		return nil
	}
	switch {
	case c.Store != nil || c.Cluster != nil:
		return errors.New("kv: HandlerConfig.Shards excludes Store and Cluster; set one form only")
	case len(c.Shards) == 0:
		return errors.New("kv: HandlerConfig.Shards is empty")
	case len(c.Shards) > MaxShards:
		return fmt.Errorf("kv: HandlerConfig.Shards has %d shards, the maximum is %d", len(c.Shards), MaxShards)
	}
	// Two groups applying into one Store would corrupt it (each group's
	// indexes are its own), so a shared Store is a configuration error.
	owner := make(map[*Store]int, len(c.Shards))
	for i, s := range c.Shards {
		switch {
		case s.Store == nil:
			return fmt.Errorf("kv: HandlerConfig.Shards[%d].Store is nil", i)
		case s.Cluster == nil:
			return fmt.Errorf("kv: HandlerConfig.Shards[%d].Cluster is nil", i)
		}
		if j, ok := owner[s.Store]; ok {
			return fmt.Errorf("kv: HandlerConfig.Shards[%d] and Shards[%d] have the same Store", j, i)
		}
		owner[s.Store] = i
	}
	return nil
}

// NewHandler returns the HTTP API over cfg.Store and cfg.Cluster, or over
// cfg.Shards; see the package documentation for the endpoints.
func NewHandler(cfg HandlerConfig) (http.Handler, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	h := &handler{cfg: cfg, log: cfg.Logger.With("component", "kv-http"), mux: http.NewServeMux()}
	if cfg.Shards != nil {
		// A copy, so that a caller reusing its slice cannot reroute keys.
		h.shards = slices.Clone(cfg.Shards)
	} else {
		h.shards = []Shard{{Store: cfg.Store, Cluster: cfg.Cluster}}
	}
	h.mux.HandleFunc("GET /kv/{key...}", h.get)
	h.mux.HandleFunc("PUT /kv/{key...}", h.put)
	h.mux.HandleFunc("DELETE /kv/{key...}", h.delete)
	h.mux.Handle("/kv/{key...}", methodNotAllowed("GET, HEAD, PUT, DELETE"))
	h.mux.HandleFunc("GET /kv", h.list)
	h.mux.Handle("/kv", methodNotAllowed("GET, HEAD"))
	if cfg.Status != nil {
		h.mux.HandleFunc("GET /status", h.status)
		h.mux.Handle("/status", methodNotAllowed("GET, HEAD"))
	}
	if cfg.Metrics != nil {
		h.mux.Handle("GET /metrics", cfg.Metrics)
		h.mux.Handle("/metrics", methodNotAllowed("GET, HEAD"))
	}
	for path, p := range map[string]Probe{"/healthz": cfg.Healthz, "/readyz": cfg.Readyz} {
		if p != nil {
			h.mux.HandleFunc("GET "+path, serveProbe(p))
			h.mux.Handle(path, methodNotAllowed("GET, HEAD"))
		}
	}
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, codeNotFound, "no such endpoint: "+r.URL.Path)
	})
	return h, nil
}

type handler struct {
	cfg HandlerConfig
	// shards is the key space: cfg.Shards, or the one shard of cfg.Store
	// and cfg.Cluster.
	shards []Shard
	log    *slog.Logger
	mux    *http.ServeMux
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if a := h.cfg.Auth; a != nil && !isProbe(r.URL.Path) && !a.authorised(r) {
		a.refuse(w)
		return
	}
	// ServeMux answers a path with empty, "." or ".." segments with a
	// redirect to the cleaned path; followed blindly, a PUT would write a
	// different key. Refuse such keys instead; clients percent-encode the
	// slashes or dots (%2F, %2E) of keys that need them.
	if p := r.URL.EscapedPath(); strings.HasPrefix(p, "/kv/") && !isCleanPath(p) {
		writeError(w, http.StatusBadRequest, codeBadKey,
			"key has empty, '.' or '..' path segments; percent-encode them")
		return
	}
	h.mux.ServeHTTP(w, r)
}

// isCleanPath reports whether ServeMux would serve p without redirecting.
func isCleanPath(p string) bool {
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c == p
}

func (h *handler) put(w http.ResponseWriter, r *http.Request) {
	key, ok := h.key(w, r)
	if !ok {
		return
	}
	if r.ContentLength > h.cfg.MaxValueBytes {
		h.tooLarge(w, r.ContentLength)
		return
	}
	value, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxValueBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			h.tooLarge(w, -1)
			return
		}
		writeError(w, http.StatusBadRequest, codeBadRequest, "reading the body: "+err.Error())
		return
	}
	index, res, ok := h.propose(w, r, key, EncodePut(key, value))
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, putResponse{Key: key, Index: index, Created: !res.Existed})
}

func (h *handler) delete(w http.ResponseWriter, r *http.Request) {
	key, ok := h.key(w, r)
	if !ok {
		return
	}
	index, res, ok := h.propose(w, r, key, EncodeDelete(key))
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, deleteResponse{Key: key, Index: index, Deleted: res.Existed})
}

// propose runs cmd, a command on key, through the cluster of key's shard
// and unpacks the Store's Result; on failure it has written the error
// response.
func (h *handler) propose(w http.ResponseWriter, r *http.Request, key string, cmd []byte) (uint64, Result, bool) {
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.RequestTimeout)
	defer cancel()
	i, shard := h.shardFor(key)
	index, result, err := shard.Cluster.Propose(ctx, cmd)
	if err != nil {
		h.fail(w, r, err, h.shardLog(i)...)
		return 0, Result{}, false
	}
	res, ok := result.(Result)
	if !ok {
		h.fail(w, r, fmt.Errorf("kv: entry %d: state machine result is %T, want kv.Result", index, result), h.shardLog(i)...)
		return 0, Result{}, false
	}
	return index, res, true
}

func (h *handler) get(w http.ResponseWriter, r *http.Request) {
	key, ok := h.key(w, r)
	if !ok {
		return
	}
	serializable, enc, ok := h.readParams(w, r)
	if !ok {
		return
	}
	i, shard := h.shardFor(key)
	if !serializable && !h.barrier(w, r, i) {
		return
	}
	v, found := shard.Store.Get(key)
	if !found {
		writeError(w, http.StatusNotFound, codeNotFound, fmt.Sprintf("key %q not found", key))
		return
	}
	writeJSON(w, http.StatusOK, newKVJSON(key, v, enc))
}

func (h *handler) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	prefix, start, end := q.Get("prefix"), q.Get("start"), q.Get("end")
	for _, p := range []string{prefix, start, end} {
		if len(p) > h.cfg.MaxKeyBytes {
			writeError(w, http.StatusBadRequest, codeBadRequest,
				fmt.Sprintf("prefix, start and end are limited to %d bytes", h.cfg.MaxKeyBytes))
			return
		}
	}
	if q.Has("prefix") && q.Has("end") {
		writeError(w, http.StatusBadRequest, codeBadRequest, "prefix and end are mutually exclusive")
		return
	}
	limit := h.cfg.ListLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			writeError(w, http.StatusBadRequest, codeBadRequest, "limit must be a positive integer")
			return
		}
		limit = min(n, h.cfg.MaxListLimit)
	}
	if q.Has("prefix") {
		start, end = max(start, prefix), PrefixEnd(prefix)
	}
	serializable, enc, ok := h.readParams(w, r)
	if !ok {
		return
	}
	// A listing reads every shard, so every shard's barrier must pass
	// first: a partial listing would silently miss keys.
	if !serializable && !h.barrier(w, r, -1) {
		return
	}
	kvs := h.merge(start, end, limit+1) // one more tells whether there are more
	resp := listResponse{KVs: make([]kvJSON, 0, min(len(kvs), limit))}
	if len(kvs) > limit {
		resp.More, resp.Next = true, kvs[limit].key
		kvs = kvs[:limit]
	}
	for _, e := range kvs {
		resp.KVs = append(resp.KVs, newKVJSON(e.key, Value{Data: e.value, CreateIndex: e.createIndex, ModIndex: e.modIndex}, enc))
	}
	resp.Count = len(resp.KVs)
	writeJSON(w, http.StatusOK, resp)
}

// readParams parses the parameters common to reads. On failure it has
// written the error response.
func (h *handler) readParams(w http.ResponseWriter, r *http.Request) (serializable, base64Values, ok bool) {
	q := r.URL.Query()
	if s := q.Get("serializable"); s != "" {
		var err error
		if serializable, err = strconv.ParseBool(s); err != nil {
			writeError(w, http.StatusBadRequest, codeBadRequest, "serializable must be true or false")
			return false, false, false
		}
	}
	switch q.Get("encoding") {
	case "":
	case "base64":
		base64Values = true
	default:
		writeError(w, http.StatusBadRequest, codeBadRequest, "encoding must be base64 or absent")
		return false, false, false
	}
	return serializable, base64Values, true
}

// barrier waits for the read barrier of shard i, or of every shard when i
// is -1, within RequestTimeout. On failure it has written the error
// response, for the (first) shard that failed.
func (h *handler) barrier(w http.ResponseWriter, r *http.Request, i int) bool {
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.RequestTimeout)
	defer cancel()
	var err error
	if i >= 0 {
		err = h.shards[i].Cluster.ReadIndex(ctx)
	} else {
		i, err = h.barrierAll(ctx)
	}
	if err != nil {
		h.fail(w, r, err, h.shardLog(i)...)
		return false
	}
	return true
}

func (h *handler) status(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, h.cfg.Status())
}

// key returns the request's key after checking it; on failure it has
// written the error response. Keys are 1..MaxKeyBytes bytes of valid UTF-8
// without control characters (Unicode category Cc: U+0000-U+001F,
// U+007F-U+009F), so that they print, log and travel in URLs and JSON
// unchanged.
func (h *handler) key(w http.ResponseWriter, r *http.Request) (string, bool) {
	key := r.PathValue("key")
	var problem string
	switch {
	case key == "":
		problem = "key is empty"
	case len(key) > h.cfg.MaxKeyBytes:
		problem = fmt.Sprintf("key is %d bytes, the maximum is %d", len(key), h.cfg.MaxKeyBytes)
	case !utf8.ValidString(key):
		problem = "key is not valid UTF-8"
	default:
		if i := strings.IndexFunc(key, unicode.IsControl); i >= 0 {
			r, _ := utf8.DecodeRuneInString(key[i:])
			problem = fmt.Sprintf("key contains the control character %U at byte %d", r, i)
		}
	}
	if problem != "" {
		writeError(w, http.StatusBadRequest, codeBadKey, problem)
		return "", false
	}
	return key, true
}

func (h *handler) tooLarge(w http.ResponseWriter, size int64) {
	msg := fmt.Sprintf("value exceeds the maximum of %d bytes", h.cfg.MaxValueBytes)
	if size >= 0 {
		msg = fmt.Sprintf("value is %d bytes, the maximum is %d", size, h.cfg.MaxValueBytes)
	}
	writeError(w, http.StatusRequestEntityTooLarge, codeTooLarge, msg)
}

type putResponse struct {
	Key     string `json:"key"`
	Index   uint64 `json:"index"`
	Created bool   `json:"created"`
}

type deleteResponse struct {
	Key     string `json:"key"`
	Index   uint64 `json:"index"`
	Deleted bool   `json:"deleted"`
}

// kvJSON carries a value as "value" when it is valid UTF-8 and base64 was
// not asked for, otherwise as "value_base64": exactly one of them is set,
// and no value is ever altered by JSON's replacement of invalid UTF-8.
type kvJSON struct {
	Key         string  `json:"key"`
	Value       *string `json:"value,omitempty"`
	ValueBase64 *string `json:"value_base64,omitempty"`
	CreateIndex uint64  `json:"create_index"`
	ModIndex    uint64  `json:"mod_index"`
}

func newKVJSON(key string, v Value, base64Values bool) kvJSON {
	out := kvJSON{Key: key, CreateIndex: v.CreateIndex, ModIndex: v.ModIndex}
	if !base64Values && utf8.Valid(v.Data) {
		s := string(v.Data)
		out.Value = &s
	} else {
		s := base64.StdEncoding.EncodeToString(v.Data)
		out.ValueBase64 = &s
	}
	return out
}

type listResponse struct {
	KVs   []kvJSON `json:"kvs"`
	Count int      `json:"count"`
	// More is true when keys beyond the last returned one are in range;
	// Next is the first of them, to pass as start to continue.
	More bool   `json:"more"`
	Next string `json:"next,omitempty"`
}
