// Package config reads the runtime's configuration from flags and TANDEM_*
// environment variables; a flag given on the command line wins over the
// environment, which wins over the default.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tandem-dev/tandem/runtime/store"
)

// Config is the runtime's configuration.
type Config struct {
	Addr           string
	DebugAddr      string // serves /debug/pprof when set; keep it off public networks
	DataDir        string
	Auth           string // "jwt" or "anonymous"
	JWTKeyFile     string
	JWTKey         string // from TANDEM_JWT_KEY only: never on a command line
	AllowedOrigins []string
	AllowedHosts   []string // extra Host names served in anonymous mode

	RedisURL        string
	RedisURLFile    string
	PostgresURL     string
	PostgresURLFile string
	// RedisTLS and PostgresTLS name PEM files: the CA that signed the
	// server's certificate and, optionally, a client certificate and key.
	RedisTLS    TLSFiles
	PostgresTLS TLSFiles
	// RedisWaitReplicas is how many replicas must confirm each commit; -1
	// picks 1 on a Redis Cluster and 0 on a single Redis.
	RedisWaitReplicas int
	// RedisCluster treats a redis:// or rediss:// URL as a Redis Cluster
	// seed (redis-cluster:// says so by itself).
	RedisCluster bool

	FlushInterval time.Duration
	FlushBatch    int
	// RedisIdleTTL is how long a fully persisted, idle document's keys
	// stay in Redis.
	RedisIdleTTL time.Duration
	// RedisTailBytes bounds, in bytes of encoded operations, the persisted
	// tail each document's Redis stream keeps for catching up.
	RedisTailBytes int

	// SnapshotInterval is how many revisions apart the durable store keeps
	// snapshots of each document (time travel, and where retention cuts).
	SnapshotInterval int
	// HistoryRetention says which history compaction removes; the zero
	// value keeps everything.
	HistoryRetention store.Retention
	// CompactionInterval is how often a compaction pass starts.
	CompactionInterval time.Duration

	MaxMessageBytes int
	MaxOpBytes      int
	MaxDocBytes     int
	OpsPerSecond    float64
	MaxConnsPerDoc  int
	// MaxPendingWriteBytes bounds what is held for clients that have not
	// read it yet, process-wide.
	MaxPendingWriteBytes int

	ShutdownTimeout time.Duration
	IdleTimeout     time.Duration
	LogLevel        slog.Level
	LogFormat       string // "text" or "json"
}

// TLSFiles names the PEM files of a TLS connection to a store.
type TLSFiles struct {
	CAFile   string // CA certificate(s) the server's certificate must chain to
	CertFile string // client certificate, when the server asks for one
	KeyFile  string // its private key
}

// Set reports whether any file is named.
func (f TLSFiles) Set() bool { return f.CAFile != "" || f.CertFile != "" || f.KeyFile != "" }

// ErrHelp is returned when --help was asked for; the usage was printed.
var ErrHelp = flag.ErrHelp

// Parse reads args (without the program name) and the environment through
// getenv. Usage and errors are written to out.
func Parse(args []string, getenv func(string) string, out io.Writer) (*Config, error) {
	c := &Config{}
	fs := flag.NewFlagSet("tandem-runtime", flag.ContinueOnError)
	fs.SetOutput(out)
	var origins, hosts, auth, level, retention string
	type envFlag struct{ flag, env string }
	var envs []envFlag
	str := func(p *string, name, env, def, usage string) {
		fs.StringVar(p, name, def, usage+" (env "+env+")")
		envs = append(envs, envFlag{name, env})
	}
	dur := func(p *time.Duration, name, env string, def time.Duration, usage string) {
		fs.DurationVar(p, name, def, usage+" (env "+env+")")
		envs = append(envs, envFlag{name, env})
	}
	num := func(p *int, name, env string, def int, usage string) {
		fs.IntVar(p, name, def, usage+" (env "+env+")")
		envs = append(envs, envFlag{name, env})
	}
	str(&c.Addr, "addr", "TANDEM_ADDR", ":8080", "listen address for the editor, the API, probes and metrics")
	str(&c.DebugAddr, "debug-addr", "TANDEM_DEBUG_ADDR", "", `listen address for /debug/pprof profiles (e.g. "127.0.0.1:6060"); empty turns it off`)
	str(&c.DataDir, "data-dir", "TANDEM_DATA_DIR", "./data", "directory of the embedded SQLite database")
	str(&auth, "auth", "TANDEM_AUTH", "", `"jwt" or "anonymous"; default anonymous in embedded mode, jwt with Redis/PostgreSQL`)
	str(&c.JWTKeyFile, "jwt-key-file", "TANDEM_JWT_KEY_FILE", "", "file holding the HS256 key (at least 32 bytes); TANDEM_JWT_KEY may hold the key itself")
	str(&origins, "allowed-origins", "TANDEM_ALLOWED_ORIGINS", "", `comma-separated browser origins allowed to open documents, "*" for any; empty allows the server's own host`)
	str(&hosts, "allowed-hosts", "TANDEM_ALLOWED_HOSTS", "", "comma-separated host names served in anonymous mode besides IP addresses, localhost and the hosts of --allowed-origins (DNS rebinding defence)")
	str(&c.RedisURL, "redis-url", "TANDEM_REDIS_URL", "", "Redis URL: enables the distributed mode; redis://host:port/db or rediss:// (TLS) for one Redis, redis-cluster://host:port[,host:port...] or rediss-cluster:// for a Redis Cluster (seed nodes)")
	str(&c.RedisURLFile, "redis-url-file", "TANDEM_REDIS_URL_FILE", "", "file holding the Redis URL")
	str(&c.PostgresURL, "postgres-url", "TANDEM_POSTGRES_URL", "", "PostgreSQL URL: enables the distributed mode")
	str(&c.PostgresURLFile, "postgres-url-file", "TANDEM_POSTGRES_URL_FILE", "", "file holding the PostgreSQL URL")
	str(&c.RedisTLS.CAFile, "redis-ca-file", "TANDEM_REDIS_CA_FILE", "", "PEM file of the CA that signed Redis's certificate (rediss:// and rediss-cluster:// URLs); default: the system's CAs")
	str(&c.RedisTLS.CertFile, "redis-cert-file", "TANDEM_REDIS_CERT_FILE", "", "PEM client certificate presented to Redis (with --redis-key-file)")
	str(&c.RedisTLS.KeyFile, "redis-key-file", "TANDEM_REDIS_KEY_FILE", "", "PEM private key of --redis-cert-file")
	fs.BoolVar(&c.RedisCluster, "redis-cluster", false, "the redis:// or rediss:// URL names a Redis Cluster node (a seed; more as ?addr=host:port); not needed with redis-cluster:// (env TANDEM_REDIS_CLUSTER)")
	envs = append(envs, envFlag{"redis-cluster", "TANDEM_REDIS_CLUSTER"})
	num(&c.RedisWaitReplicas, "redis-wait-replicas", "TANDEM_REDIS_WAIT_REPLICAS", -1, "Redis replicas that must confirm each commit before it is acknowledged (WAIT), so a failover loses no acknowledged edit; -1: 1 on a Redis Cluster, 0 on a single Redis")
	str(&c.PostgresTLS.CAFile, "postgres-ca-file", "TANDEM_POSTGRES_CA_FILE", "", "PEM file of the CA that signed PostgreSQL's certificate; sets sslrootcert and, unless the URL names an sslmode, sslmode=verify-full")
	str(&c.PostgresTLS.CertFile, "postgres-cert-file", "TANDEM_POSTGRES_CERT_FILE", "", "PEM client certificate presented to PostgreSQL (with --postgres-key-file)")
	str(&c.PostgresTLS.KeyFile, "postgres-key-file", "TANDEM_POSTGRES_KEY_FILE", "", "PEM private key of --postgres-cert-file")
	dur(&c.FlushInterval, "flush-interval", "TANDEM_FLUSH_INTERVAL", 500*time.Millisecond, "distributed mode: longest wait before committed operations are written to PostgreSQL (embedded mode writes each one to SQLite before acknowledging it)")
	num(&c.FlushBatch, "flush-batch", "TANDEM_FLUSH_BATCH", 256, "distributed mode: write to PostgreSQL as soon as this many operations are pending")
	dur(&c.RedisIdleTTL, "redis-idle-ttl", "TANDEM_REDIS_IDLE_TTL", 10*time.Minute, "distributed mode: how long the Redis keys of a document whose edits are all in PostgreSQL stay after its last use; it is reloaded from PostgreSQL on the next")
	num(&c.RedisTailBytes, "redis-tail-bytes", "TANDEM_REDIS_TAIL_BYTES", 4<<20, "distributed mode: bytes of persisted operations each document's Redis stream keeps (at most 1,000 of them) so that clients catch up from Redis; older ones are read from PostgreSQL")
	num(&c.SnapshotInterval, "snapshot-interval", "TANDEM_SNAPSHOT_INTERVAL", store.DefaultSnapshotInterval, "revisions between the stored snapshots of a document: reading an old revision replays at most this many operations")
	str(&retention, "history-retention", "TANDEM_HISTORY_RETENTION", "", `history to keep: a duration ("720h"), a number of revisions ("10000") or both ("720h,10000"); older operations are compacted away, keeping snapshots so the text stays exact. Empty keeps everything`)
	dur(&c.CompactionInterval, "compaction-interval", "TANDEM_COMPACTION_INTERVAL", time.Minute, "how often a compaction pass starts when --history-retention is set")
	num(&c.MaxMessageBytes, "max-message-bytes", "TANDEM_MAX_MESSAGE_BYTES", 256<<10, "largest WebSocket message accepted (larger: close 1009)")
	num(&c.MaxOpBytes, "max-op-bytes", "TANDEM_MAX_OP_BYTES", 64<<10, "most bytes of text one operation may insert")
	num(&c.MaxDocBytes, "max-doc-bytes", "TANDEM_MAX_DOC_BYTES", 8<<20, "largest document, in bytes of UTF-8")
	fs.Float64Var(&c.OpsPerSecond, "ops-per-second", 50, "operations per second per connection (env TANDEM_OPS_PER_SECOND)")
	envs = append(envs, envFlag{"ops-per-second", "TANDEM_OPS_PER_SECOND"})
	num(&c.MaxConnsPerDoc, "max-conns-per-doc", "TANDEM_MAX_CONNS_PER_DOC", 200, "connections to one document on this process")
	num(&c.MaxPendingWriteBytes, "max-pending-write-bytes", "TANDEM_MAX_PENDING_WRITE_BYTES", 64<<20, "bytes held for clients that have not read them yet, process-wide; beyond it slow clients are disconnected and HTTP reads answered 503")
	dur(&c.IdleTimeout, "idle-timeout", "TANDEM_IDLE_TIMEOUT", 60*time.Second, "how long an idle keep-alive HTTP connection is kept open")
	dur(&c.ShutdownTimeout, "shutdown-timeout", "TANDEM_SHUTDOWN_TIMEOUT", 20*time.Second, "how long a graceful shutdown may take")
	str(&level, "log-level", "TANDEM_LOG_LEVEL", "info", "debug, info, warn or error")
	str(&c.LogFormat, "log-format", "TANDEM_LOG_FORMAT", "text", `"text" or "json"`)
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: tandem-runtime [flags]\n       tandem-runtime token --jwt-key-file F --sub U --doc D --perm write --ttl 1h\n\n")
		fmt.Fprintf(out, "Serves collaborative plain-text documents. Every flag can also be set with\nthe environment variable named after it.\n\nFlags:\n")
		fs.PrintDefaults()
		fmt.Fprintf(out, "  TANDEM_JWT_KEY\n    \tthe HS256 key itself (instead of --jwt-key-file)\n")
	}
	for _, e := range envs {
		if v := getenv(e.env); v != "" {
			if err := fs.Set(e.flag, v); err != nil {
				return nil, fmt.Errorf("%s=%q: %w", e.env, v, err)
			}
		}
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	c.JWTKey = getenv("TANDEM_JWT_KEY")
	for _, o := range strings.Split(origins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			c.AllowedOrigins = append(c.AllowedOrigins, o)
		}
	}
	for _, h := range strings.Split(hosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			c.AllowedHosts = append(c.AllowedHosts, h)
		}
	}
	if err := c.LogLevel.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	switch auth {
	case "":
		c.Auth = "anonymous"
		if c.Distributed() {
			c.Auth = "jwt"
		}
	case "jwt", "anonymous":
		c.Auth = auth
	default:
		return nil, fmt.Errorf(`--auth must be "jwt" or "anonymous", not %q`, auth)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return nil, fmt.Errorf(`--log-format must be "text" or "json", not %q`, c.LogFormat)
	}
	ret, err := ParseRetention(retention)
	if err != nil {
		return nil, err
	}
	c.HistoryRetention = ret
	for name, v := range map[string]int{"snapshot-interval": c.SnapshotInterval, "redis-tail-bytes": c.RedisTailBytes, "flush-batch": c.FlushBatch, "max-message-bytes": c.MaxMessageBytes, "max-op-bytes": c.MaxOpBytes, "max-doc-bytes": c.MaxDocBytes, "max-conns-per-doc": c.MaxConnsPerDoc, "max-pending-write-bytes": c.MaxPendingWriteBytes} {
		if v <= 0 {
			return nil, fmt.Errorf("--%s must be positive, not %d", name, v)
		}
	}
	if c.FlushInterval <= 0 || c.OpsPerSecond <= 0 || c.ShutdownTimeout <= 0 || c.IdleTimeout <= 0 || c.CompactionInterval <= 0 || c.RedisIdleTTL <= 0 {
		return nil, errors.New("--flush-interval, --ops-per-second, --shutdown-timeout, --idle-timeout, --compaction-interval and --redis-idle-ttl must be positive")
	}
	for name, f := range map[string]TLSFiles{"redis": c.RedisTLS, "postgres": c.PostgresTLS} {
		if (f.CertFile == "") != (f.KeyFile == "") {
			return nil, fmt.Errorf("--%s-cert-file and --%s-key-file go together: give both or neither", name, name)
		}
	}
	if c.RedisWaitReplicas < -1 {
		return nil, fmt.Errorf("--redis-wait-replicas must be -1 (automatic) or more, not %d", c.RedisWaitReplicas)
	}
	if c.Auth == "jwt" && c.JWTKeyFile == "" && c.JWTKey == "" {
		return nil, errors.New("--auth=jwt needs --jwt-key-file or TANDEM_JWT_KEY")
	}
	return c, nil
}

// ParseRetention reads --history-retention: empty (keep everything), a
// duration, a number of revisions, or both separated by a comma.
func ParseRetention(v string) (store.Retention, error) {
	var r store.Retention
	if strings.TrimSpace(v) == "" {
		return r, nil
	}
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		if n, err := strconv.ParseInt(part, 10, 64); err == nil {
			if n <= 0 || r.Revisions != 0 {
				return r, fmt.Errorf("--history-retention %q: the number of revisions must be positive and given once", v)
			}
			r.Revisions = n
			continue
		}
		d, err := time.ParseDuration(part)
		if err != nil || d <= 0 || r.Age != 0 {
			return r, fmt.Errorf(`--history-retention %q: want a positive duration ("720h"), a number of revisions ("10000") or both ("720h,10000")`, v)
		}
		r.Age = d
	}
	return r, nil
}

// Distributed reports whether Redis or PostgreSQL is configured.
func (c *Config) Distributed() bool {
	return c.RedisURL != "" || c.RedisURLFile != "" || c.PostgresURL != "" || c.PostgresURLFile != ""
}

// Redis returns the Redis URL, reading the file variant when set.
func (c *Config) Redis() (string, error) { return valueOrFile(c.RedisURL, c.RedisURLFile, "redis url") }

// Postgres returns the PostgreSQL URL, reading the file variant when set.
func (c *Config) Postgres() (string, error) {
	return valueOrFile(c.PostgresURL, c.PostgresURLFile, "postgres url")
}

// Key returns the JWT signing key from the file or the environment.
func (c *Config) Key() ([]byte, error) {
	if c.JWTKeyFile != "" {
		b, err := os.ReadFile(c.JWTKeyFile)
		if err != nil {
			return nil, fmt.Errorf("read jwt key: %w", err)
		}
		return []byte(strings.TrimRight(string(b), "\r\n")), nil
	}
	if c.JWTKey != "" {
		return []byte(c.JWTKey), nil
	}
	return nil, errors.New("no jwt key: set --jwt-key-file or TANDEM_JWT_KEY")
}

func valueOrFile(v, file, what string) (string, error) {
	if file == "" {
		return v, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read %s file: %w", what, err)
	}
	return strings.TrimSpace(string(b)), nil
}
