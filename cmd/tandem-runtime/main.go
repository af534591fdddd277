// Command tandem-runtime serves collaborative plain-text documents: the
// editor, the document WebSocket and HTTP API, probes and metrics. Without
// Redis/PostgreSQL it runs embedded on SQLite under --data-dir.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tandem-dev/tandem/runtime/auth"
	"github.com/tandem-dev/tandem/runtime/config"
	"github.com/tandem-dev/tandem/runtime/doc"
	"github.com/tandem-dev/tandem/runtime/metrics"
	"github.com/tandem-dev/tandem/runtime/protocol"
	"github.com/tandem-dev/tandem/runtime/server"
	"github.com/tandem-dev/tandem/runtime/store"
	"github.com/tandem-dev/tandem/runtime/store/memory"
	"github.com/tandem-dev/tandem/runtime/store/sqlite"
	"github.com/tandem-dev/tandem/runtime/web"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "token" {
		if err := runToken(os.Args[2:], os.Getenv, os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "tandem-runtime token:", err)
			os.Exit(2)
		}
		return
	}
	cfg, err := config.Parse(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, config.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tandem-runtime:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		slog.Error("tandem-runtime stopped", "err", err)
		os.Exit(1)
	}
}

// backends are the storage seams the document layer runs on.
type backends struct {
	Log      store.Log
	Durable  store.Durable
	Presence store.Presence
	// Router, in the distributed mode, routes a busy document's
	// submissions to the one replica that appends them (nil: embedded).
	Router store.Router
	// Ready are the dependencies /readyz reports on.
	Ready []server.ReadyCheck
	// Close flushes and releases everything, after the documents stopped.
	Close func(ctx context.Context) error
}

func newLogger(cfg *config.Config, out io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(out, opts))
	}
	return slog.New(slog.NewTextHandler(out, opts))
}

func openEmbedded(ctx context.Context, cfg *config.Config, logger *slog.Logger) (*backends, error) {
	durable, err := sqlite.Open(ctx, cfg.DataDir)
	if err != nil {
		return nil, err
	}
	durable.SetSnapshotInterval(int64(cfg.SnapshotInterval))
	l := memory.NewLog(memory.LogOptions{Durable: durable, SyncCommit: true, FlushInterval: cfg.FlushInterval, FlushBatch: cfg.FlushBatch, Logger: logger})
	p := memory.NewPresence(memory.PresenceOptions{TTL: 30 * time.Second})
	return &backends{
		Log: l, Durable: durable, Presence: p,
		Ready: []server.ReadyCheck{{Name: "sqlite", Check: durable.Ready}},
		Close: func(ctx context.Context) error {
			p.Close()
			return errors.Join(l.Close(ctx), durable.Close())
		},
	}, nil
}

// editorURL is what a person on this machine opens for addr.
func editorURL(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "http://" + addr.String() + "/"
	}
	if ip := net.ParseIP(host); host == "" || ip == nil || ip.IsUnspecified() || ip.IsLoopback() {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port) + "/"
}

func run(ctx context.Context, cfg *config.Config, stdout io.Writer) error {
	logger := newLogger(cfg, os.Stderr)
	slog.SetDefault(logger)
	m := metrics.New()

	var authn auth.Authenticator
	switch cfg.Auth {
	case "anonymous":
		logger.Warn("anonymous mode: anyone who can reach this server can read and edit every document; use --auth=jwt beyond local use")
		authn = auth.Anonymous{}
	default:
		key, err := cfg.Key()
		if err != nil {
			return err
		}
		if authn, err = auth.NewJWT(key, nil); err != nil {
			return err
		}
	}

	if cfg.Distributed() {
		// A configuration that can never work fails before listening.
		if _, _, err := distributedURLs(cfg); err != nil {
			return err
		}
	}
	// Listen before opening storage: the stores may come up after this
	// process (a new cluster), and while it waits for them the probes must
	// answer, live on /healthz and not ready on /readyz with the reason.
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	g := &gate{metrics: m.Handler()}
	g.setReason(errors.New("opening storage"))
	// IdleTimeout closes kept-alive connections nobody uses: without it
	// they pile up until the process runs out of file descriptors.
	hs := &http.Server{Handler: g, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: cfg.IdleTimeout, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	logger.Info("listening", "addr", ln.Addr().String())

	if cfg.DebugAddr != "" {
		dln, err := net.Listen("tcp", cfg.DebugAddr)
		if err != nil {
			_ = hs.Close()
			return fmt.Errorf("listen on debug address %s: %w", cfg.DebugAddr, err)
		}
		// A separate listener, so profiles are never reachable through the
		// Service or Ingress that carries the editor.
		ds := &http.Server{Handler: debugHandler(), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = ds.Serve(dln) }()
		defer func() { _ = ds.Close() }()
		logger.Info("serving profiles", "addr", dln.Addr().String()+"/debug/pprof/")
	}
	var b *backends
	if cfg.Distributed() {
		b, err = openDistributed(ctx, cfg, m.Registry, g.setReason)
	} else {
		b, err = openEmbedded(ctx, cfg, logger)
	}
	if err != nil {
		_ = hs.Close()
		if ctx.Err() != nil {
			logger.Info("stopped before storage was ready", "err", err)
			return nil
		}
		return fmt.Errorf("open storage: %w", err)
	}

	mgr := doc.NewManager(doc.Options{
		Log: b.Log, Durable: b.Durable, Presence: b.Presence, Router: b.Router, Metrics: m, Logger: logger,
		MaxDocBytes: cfg.MaxDocBytes,
	})
	srv := server.New(server.Options{
		Manager: mgr, Auth: authn, Metrics: m, Logger: logger,
		Limits: server.Limits{
			MaxMessageBytes: int64(cfg.MaxMessageBytes), MaxOpBytes: cfg.MaxOpBytes,
			OpsPerSecond: cfg.OpsPerSecond, MaxConnsPerDoc: cfg.MaxConnsPerDoc,
		},
		AllowedOrigins:  cfg.AllowedOrigins,
		CheckHost:       cfg.Auth == "anonymous",
		AllowedHosts:    cfg.AllowedHosts,
		MaxPendingBytes: int64(cfg.MaxPendingWriteBytes),
		Ready:           b.Ready,
		Web:             web.Handler(),
	})
	g.open(srv.Handler())
	// History retention: a background pass every --compaction-interval,
	// stopped before the stores close. Across replicas the PostgreSQL
	// store lets one compact at a time (an advisory lock per batch).
	compactMetrics, err := store.NewCompactionMetrics(m.Registry)
	if err != nil {
		return err
	}
	compactCtx, stopCompaction := context.WithCancel(ctx)
	compactionDone := make(chan struct{})
	go func() {
		defer close(compactionDone)
		store.RunCompaction(compactCtx, mgr.Archive(), store.CompactionOptions{
			Retention: cfg.HistoryRetention, Every: cfg.CompactionInterval, Logger: logger,
			Metrics: compactMetrics,
		})
	}()
	defer func() { stopCompaction(); <-compactionDone }()
	if !cfg.HistoryRetention.Keeps() {
		logger.Info("history retention on", "age", cfg.HistoryRetention.Age, "revisions", cfg.HistoryRetention.Revisions,
			"every", cfg.CompactionInterval)
	}
	mode := "embedded (SQLite in " + cfg.DataDir + ")"
	if cfg.Distributed() {
		mode = "distributed (Redis + PostgreSQL)"
	}
	logger.Info("serving", "addr", ln.Addr().String(), "storage", mode, "auth", cfg.Auth)
	// Printed once documents are served: scripts wait for this line.
	fmt.Fprintf(stdout, "Tandem editor: %s\n", editorURL(ln.Addr()))

	select {
	case <-ctx.Done():
		logger.Info("shutting down")
	case err := <-served:
		_ = b.Close(context.Background())
		return fmt.Errorf("http server: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	// Order matters: tell clients to reconnect elsewhere, stop taking
	// requests, stop the documents, then flush storage.
	var errs []error
	if err := srv.Shutdown(sctx); err != nil {
		errs = append(errs, err)
	}
	if err := hs.Shutdown(sctx); err != nil {
		errs = append(errs, fmt.Errorf("http shutdown: %w", err))
	}
	if err := mgr.Close(sctx); err != nil {
		errs = append(errs, err)
	}
	stopCompaction()
	<-compactionDone
	if err := b.Close(sctx); err != nil {
		errs = append(errs, fmt.Errorf("close storage: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	logger.Info("stopped cleanly")
	return nil
}

// gate answers the probes while storage is being opened and hands every
// request to the server once it is.
type gate struct {
	h       atomic.Pointer[http.Handler]
	reason  atomic.Pointer[string]
	metrics http.Handler
}

// setReason records why storage is not open yet (nil: it answers).
func (g *gate) setReason(err error) {
	r := "storage answers, starting"
	if err != nil {
		r = err.Error()
	}
	g.reason.Store(&r)
}

// open sends every later request to h.
func (g *gate) open(h http.Handler) { g.h.Store(&h) }

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := g.h.Load(); h != nil {
		(*h).ServeHTTP(w, r)
		return
	}
	switch r.URL.Path {
	case "/healthz":
		// Live: the process is healthy, it waits for its stores. A
		// restart would not bring them sooner.
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	case "/readyz":
		http.Error(w, "not ready: waiting for storage: "+*g.reason.Load(), http.StatusServiceUnavailable)
	case "/metrics":
		g.metrics.ServeHTTP(w, r)
	default:
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintf(w, `{"code":%q,"message":"starting: waiting for storage, retry"}`+"\n", protocol.CodeUnavailable)
	}
}

// debugHandler serves the standard net/http/pprof endpoints.
func debugHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", redactedCmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// redactedCmdline is pprof's cmdline with the passwords of URL arguments
// replaced: a --redis-url or --postgres-url given on the command line
// would otherwise be readable by anyone who reaches the debug listener.
// (Prefer TANDEM_REDIS_URL, TANDEM_POSTGRES_URL or the *-file flags.)
func redactedCmdline(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	args := make([]string, len(os.Args))
	for i, a := range os.Args {
		args[i] = redactArg(a)
	}
	fmt.Fprint(w, strings.Join(args, "\x00"))
}

// redactArg hides the password of a URL argument, also in --flag=URL form.
func redactArg(a string) string {
	prefix, v := "", a
	if strings.HasPrefix(a, "-") {
		if i := strings.IndexByte(a, '='); i >= 0 {
			prefix, v = a[:i+1], a[i+1:]
		}
	}
	u, err := url.Parse(v)
	if err != nil || u.User == nil {
		return a
	}
	if _, ok := u.User.Password(); !ok {
		return a
	}
	return prefix + u.Redacted()
}
