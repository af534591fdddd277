package distributed

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

// TLSFiles names the PEM files of a TLS connection to Redis or PostgreSQL.
type TLSFiles struct {
	CAFile   string // CA the server's certificate must chain to (default: system CAs)
	CertFile string // client certificate, when the server asks for one
	KeyFile  string // its key
}

func (f TLSFiles) set() bool { return f.CAFile != "" || f.CertFile != "" || f.KeyFile != "" }

// redisConn is a parsed Redis URL: the client and what Open needs to know
// about it.
type redisConn struct {
	client  redis.UniversalClient
	cluster bool
	addr    string // for messages: the (first) address
}

// Redis URLs tandem-runtime accepts:
//
//	redis://[user:pass@]host:port[/db][?options]       one Redis
//	rediss://...                                        one Redis over TLS
//	redis-cluster://[user:pass@]host:port[,host:port...][?options]
//	rediss-cluster://...                                a Redis Cluster over TLS
//
// A cluster URL lists seed nodes: any one reachable node is enough to find
// the others, more seeds let the runtime start while some are down. The
// options are go-redis's URL options (dial_timeout, read_timeout,
// pool_size, ...).
func newRedisConn(rawURL string, cluster bool, files TLSFiles) (*redisConn, error) {
	scheme, _, ok := strings.Cut(rawURL, "://")
	if !ok {
		return nil, fmt.Errorf("parse redis url: want redis://, rediss://, redis-cluster:// or rediss-cluster://, got %q", redact(rawURL))
	}
	if cluster && (scheme == "redis" || scheme == "rediss") {
		// The seed form go-redis knows: redis://host:port?addr=host:port.
		scheme += "-cluster"
		o, err := redis.ParseClusterURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("parse redis cluster url: %w", err)
		}
		return newClusterConn(o, files, scheme)
	}
	switch scheme {
	case "redis", "rediss":
		o, err := redis.ParseURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("parse redis url: %w", err)
		}
		if err := applyRedisTLS(&o.TLSConfig, files, scheme); err != nil {
			return nil, err
		}
		setTimeouts(&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout)
		o.MaxRetries = 1
		return &redisConn{client: redis.NewClient(o), addr: o.Addr}, nil
	case "redis-cluster", "rediss-cluster":
		o, err := parseClusterURL(rawURL, strings.TrimSuffix(scheme, "-cluster"))
		if err != nil {
			return nil, err
		}
		return newClusterConn(o, files, scheme)
	default:
		return nil, fmt.Errorf("parse redis url: unknown scheme %q: want redis://, rediss://, redis-cluster:// or rediss-cluster://", scheme)
	}
}

func newClusterConn(o *redis.ClusterOptions, files TLSFiles, scheme string) (*redisConn, error) {
	if o.TLSConfig != nil {
		// Each node presents its own certificate: let the TLS dialer check
		// it against the address dialled, not the first seed.
		o.TLSConfig.ServerName = ""
	}
	if err := applyRedisTLS(&o.TLSConfig, files, scheme); err != nil {
		return nil, err
	}
	setTimeouts(&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout)
	// Redirections follow slot moves and failovers; a few retries ride out
	// the seconds a failover takes before the breaker counts it.
	if o.MaxRedirects == 0 {
		o.MaxRedirects = 8
	}
	o.MaxRetries = 3
	return &redisConn{client: redis.NewClusterClient(o), cluster: true, addr: o.Addrs[0]}, nil
}

// parseClusterURL turns redis-cluster://u:p@a,b,c/?opts into go-redis's
// cluster URL form (redis://u:p@a?addr=b&addr=c&opts).
func parseClusterURL(rawURL, base string) (*redis.ClusterOptions, error) {
	_, rest, _ := strings.Cut(rawURL, "://")
	hosts, tail := rest, ""
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		hosts, tail = rest[:i], rest[i:]
	}
	userinfo := ""
	if i := strings.LastIndex(hosts, "@"); i >= 0 {
		userinfo, hosts = hosts[:i+1], hosts[i+1:]
	}
	var addrs []string
	for _, a := range strings.Split(hosts, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("parse redis cluster url %q: no seed address (want host:port[,host:port...])", redact(rawURL))
	}
	u, err := url.Parse(base + "://" + userinfo + addrs[0] + tail)
	if err != nil {
		return nil, fmt.Errorf("parse redis cluster url: %w", err)
	}
	if u.Path != "" && u.Path != "/" && u.Path != "/0" {
		return nil, fmt.Errorf("parse redis cluster url %q: a Redis Cluster has only database 0, not %s", redact(rawURL), u.Path)
	}
	u.Path = ""
	q := u.Query()
	for _, a := range addrs[1:] {
		q.Add("addr", a)
	}
	u.RawQuery = q.Encode()
	o, err := redis.ParseClusterURL(u.String())
	if err != nil {
		return nil, fmt.Errorf("parse redis cluster url: %w", err)
	}
	return o, nil
}

func setTimeouts(dial, read, write *time.Duration) {
	// Short timeouts: a Redis that does not answer must surface quickly
	// as "unavailable" through the breaker, not as a hang.
	for _, d := range []*time.Duration{dial, read, write} {
		if *d == 0 {
			*d = 2 * time.Second
		}
	}
}

// applyRedisTLS adds the CA and client certificate to a TLS URL's config.
func applyRedisTLS(cfg **tls.Config, files TLSFiles, scheme string) error {
	if !files.set() {
		return nil
	}
	if *cfg == nil {
		return fmt.Errorf("redis TLS files are set (--redis-ca-file, --redis-cert-file) but the Redis URL is %s://, which does not use TLS: use %s://", scheme, strings.Replace(scheme, "redis", "rediss", 1))
	}
	if err := loadTLSFiles(*cfg, files, "redis"); err != nil {
		return err
	}
	(*cfg).MinVersion = tls.VersionTLS12
	return nil
}

func loadTLSFiles(cfg *tls.Config, files TLSFiles, what string) error {
	if files.CAFile != "" {
		pem, err := os.ReadFile(files.CAFile)
		if err != nil {
			return fmt.Errorf("%s CA file: %w", what, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%s CA file %s holds no PEM certificate", what, files.CAFile)
		}
		cfg.RootCAs = pool
	}
	if files.CertFile != "" || files.KeyFile != "" {
		pair, err := tls.LoadX509KeyPair(files.CertFile, files.KeyFile)
		if err != nil {
			return fmt.Errorf("%s client certificate %s with key %s: %w", what, files.CertFile, files.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return nil
}

// postgresConfig parses a PostgreSQL URL and applies the TLS files: the CA
// becomes sslrootcert and, unless the URL chose an sslmode, the mode is
// verify-full (the server's certificate must chain to the CA and name the
// host). Files with sslmode=disable are refused rather than ignored.
func postgresConfig(rawURL string, files TLSFiles) (*pgxpool.Config, error) {
	if files.set() {
		u, err := url.Parse(rawURL)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			return nil, errors.New("postgres TLS files (--postgres-ca-file, --postgres-cert-file) need the PostgreSQL URL in URL form (postgres://...)")
		}
		q := u.Query()
		switch q.Get("sslmode") {
		case "":
			q.Set("sslmode", "verify-full")
		case "disable", "allow", "prefer":
			return nil, fmt.Errorf("postgres TLS files are set but the PostgreSQL URL has sslmode=%s: use sslmode=verify-full (or leave sslmode out)", q.Get("sslmode"))
		}
		if files.CAFile != "" {
			q.Set("sslrootcert", files.CAFile)
		}
		if files.CertFile != "" {
			q.Set("sslcert", files.CertFile)
			q.Set("sslkey", files.KeyFile)
		}
		u.RawQuery = q.Encode()
		rawURL = u.String()
	}
	cfg, err := pgxpool.ParseConfig(rawURL)
	if err != nil {
		return nil, fmt.Errorf("parse postgres url: %w", err)
	}
	return cfg, nil
}

// redact hides a password in a URL for messages.
func redact(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return "(unparseable)"
	}
	if i := strings.LastIndex(strings.SplitN(rest, "/", 2)[0], "@"); i >= 0 {
		return scheme + "://***@" + rest[i+1:]
	}
	return raw
}
