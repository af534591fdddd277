package testsvc

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisCluster is a throwaway Redis Cluster of three masters with one
// replica each, every node a redis-server on its own loopback port with
// the append-only file on. It is removed at t.Cleanup.
type RedisCluster struct {
	t     testing.TB
	Nodes []*Redis
	certs *Certs
}

// clusterNodeTimeout is how long a master may be unreachable before its
// replica takes over. Short, so failover tests finish quickly, but long
// enough that a loaded machine does not fail nodes over by itself.
const clusterNodeTimeout = 3000 * time.Millisecond

// StartRedisCluster starts six cluster-enabled redis-servers, joins them
// with redis-cli --cluster create (one replica per master) and waits until
// every node reports the cluster ok and every replica is in sync. opts
// apply to every node (WithTLS serves the cluster bus and clients over
// TLS).
func StartRedisCluster(t testing.TB, opts ...RedisOption) *RedisCluster {
	t.Helper()
	cli := requireBinary(t, "redis-cli", "redis-tools")
	rc := &RedisCluster{t: t}
	probe := &Redis{}
	for _, o := range opts {
		o(probe)
	}
	rc.certs = probe.certs
	nodeOpts := append([]RedisOption{WithAppendOnly(), WithArgs(
		"--cluster-enabled", "yes",
		"--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", strconv.Itoa(int(clusterNodeTimeout.Milliseconds())),
		// A replica may take over however long it was cut off: tests kill
		// masters on a loaded machine.
		"--cluster-replica-validity-factor", "0",
	)}, opts...)
	if rc.certs != nil {
		nodeOpts = append(nodeOpts, WithArgs("--tls-cluster", "yes", "--tls-replication", "yes"))
	}
	for i := 0; i < 6; i++ {
		rc.Nodes = append(rc.Nodes, StartRedis(t, nodeOpts...))
	}
	args := []string{"--cluster", "create"}
	args = append(args, rc.Addrs()...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if rc.certs != nil {
		args = append([]string{"--tls", "--cacert", rc.certs.CAFile, "--cert", rc.certs.ClientCertFile, "--key", rc.certs.ClientKeyFile}, args...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("testsvc: redis-cli --cluster create: %v\n%s", err, out)
	}
	if err := rc.WaitHealthy(ctx); err != nil {
		t.Fatalf("testsvc: redis cluster: %v", err)
	}
	return rc
}

// Addrs lists every node's 127.0.0.1:PORT.
func (rc *RedisCluster) Addrs() []string {
	out := make([]string, len(rc.Nodes))
	for i, n := range rc.Nodes {
		out[i] = n.Addr()
	}
	return out
}

// URL is redis-cluster://ADDR,ADDR,... (rediss-cluster:// with TLS), the
// form tandem-runtime's --redis-url accepts for a cluster.
func (rc *RedisCluster) URL() string {
	scheme := "redis-cluster"
	if rc.certs != nil {
		scheme = "rediss-cluster"
	}
	return scheme + "://" + strings.Join(rc.Addrs(), ",")
}

// Client is a go-redis cluster client for the test's own checks.
func (rc *RedisCluster) Client() *redis.ClusterClient {
	o := &redis.ClusterOptions{Addrs: rc.Addrs(), MaxRedirects: 16}
	if rc.certs != nil {
		cfg, err := rc.certs.TLSConfig()
		if err != nil {
			rc.t.Fatalf("testsvc: %v", err)
		}
		o.TLSConfig = cfg
	}
	c := redis.NewClusterClient(o)
	rc.t.Cleanup(func() { c.Close() })
	return c
}

func (rc *RedisCluster) nodeClient(n *Redis) *redis.Client {
	o := &redis.Options{Addr: n.Addr(), MaxRetries: -1, PoolSize: 1, DialTimeout: time.Second, ReadTimeout: 2 * time.Second}
	if rc.certs != nil {
		cfg, err := rc.certs.TLSConfig()
		if err != nil {
			rc.t.Fatalf("testsvc: %v", err)
		}
		o.TLSConfig = cfg
	}
	return redis.NewClient(o)
}

func (rc *RedisCluster) running(n *Redis) bool {
	n.svc.mu.Lock()
	defer n.svc.mu.Unlock()
	return n.svc.proc != nil && !n.svc.proc.exited()
}

// MasterOf returns the node serving key's hash slot as a master, as the
// running nodes see it.
func (rc *RedisCluster) MasterOf(key string) *Redis {
	rc.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := rc.masterOf(ctx, key)
	if err != nil {
		rc.t.Fatalf("testsvc: %v", err)
	}
	return m
}

func (rc *RedisCluster) masterOf(ctx context.Context, key string) (*Redis, error) {
	for _, n := range rc.Nodes {
		if !rc.running(n) {
			continue
		}
		c := rc.nodeClient(n)
		slot, err := c.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			c.Close()
			continue
		}
		slots, err := c.ClusterSlots(ctx).Result()
		c.Close()
		if err != nil {
			continue
		}
		for _, s := range slots {
			if int64(s.Start) <= slot && slot <= int64(s.End) && len(s.Nodes) > 0 {
				for _, cand := range rc.Nodes {
					if cand.Addr() == s.Nodes[0].Addr {
						return cand, nil
					}
				}
			}
		}
	}
	return nil, fmt.Errorf("no running node knows the master of %q", key)
}

// KillMasterOf kills (SIGKILL) the master serving key's slot, waits until
// its replica has been promoted and the cluster is ok again, and returns
// the killed node (Start brings it back as a replica).
func (rc *RedisCluster) KillMasterOf(key string) *Redis {
	rc.t.Helper()
	old := rc.MasterOf(key)
	old.Kill()
	rc.WaitPromoted(key, old)
	return old
}

// WaitPromoted waits until a node other than old serves key's slot as its
// master and the cluster is ok again, after old was killed.
func (rc *RedisCluster) WaitPromoted(key string, old *Redis) {
	rc.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	for {
		m, err := rc.masterOf(ctx, key)
		if err == nil && m != old {
			if err := rc.WaitHealthy(ctx); err != nil {
				rc.t.Fatalf("testsvc: redis cluster after losing %s: %v", old.Addr(), err)
			}
			return
		}
		select {
		case <-ctx.Done():
			rc.t.Fatalf("testsvc: no replica promoted after losing master %s of %q", old.Addr(), key)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ReplicaOf returns the running replica of master.
func (rc *RedisCluster) ReplicaOf(master *Redis) *Redis {
	rc.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, port, _ := strings.Cut(master.Addr(), ":")
	for _, n := range rc.Nodes {
		if n == master || !rc.running(n) {
			continue
		}
		c := rc.nodeClient(n)
		info, err := c.Info(ctx, "replication").Result()
		c.Close()
		if err == nil && strings.Contains(info, "role:slave") && strings.Contains(info, "master_port:"+port+"\r\n") {
			return n
		}
	}
	rc.t.Fatalf("testsvc: no replica of master %s", master.Addr())
	return nil
}

// WaitReplicated waits until replica has applied everything master had
// written when it was called (its slave_repl_offset reached the master's
// master_repl_offset).
func (rc *RedisCluster) WaitReplicated(master, replica *Redis) {
	rc.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	offset := func(n *Redis, field string) (int64, error) {
		c := rc.nodeClient(n)
		defer c.Close()
		info, err := c.Info(ctx, "replication").Result()
		if err != nil {
			return 0, err
		}
		for _, line := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(line, field+":"); ok {
				return strconv.ParseInt(v, 10, 64)
			}
		}
		return 0, fmt.Errorf("%s: no %s in INFO replication", n.Addr(), field)
	}
	want, err := offset(master, "master_repl_offset")
	if err != nil {
		rc.t.Fatalf("testsvc: %v", err)
	}
	for {
		got, err := offset(replica, "slave_repl_offset")
		if err == nil && got >= want {
			return
		}
		select {
		case <-ctx.Done():
			rc.t.Fatalf("testsvc: replica %s did not reach offset %d of %s: %d, %v", replica.Addr(), want, master.Addr(), got, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// CutReplication closes master's links to its replicas (CLIENT KILL TYPE
// replica) and checks that none is left. A replica reconnects within a
// second unless it is paused (Redis.Pause): pause it first to keep the
// master's next writes on the master alone.
func (rc *RedisCluster) CutReplication(master *Redis) {
	rc.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := rc.nodeClient(master)
	defer c.Close()
	if err := c.Do(ctx, "CLIENT", "KILL", "TYPE", "replica").Err(); err != nil {
		rc.t.Fatalf("testsvc: CLIENT KILL TYPE replica on %s: %v", master.Addr(), err)
	}
	for {
		info, err := c.Info(ctx, "replication").Result()
		if err == nil && strings.Contains(info, "connected_slaves:0\r\n") {
			return
		}
		select {
		case <-ctx.Done():
			rc.t.Fatalf("testsvc: master %s still has replicas after CLIENT KILL: %v %s", master.Addr(), err, info)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// WaitHealthy waits until every running node reports cluster_state:ok,
// agrees on who serves every slot, and every running replica's link to
// its master is up.
func (rc *RedisCluster) WaitHealthy(ctx context.Context) error {
	var last error
	for {
		if last = rc.healthy(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not healthy: %w", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (rc *RedisCluster) healthy(ctx context.Context) error {
	var view string
	for _, n := range rc.Nodes {
		if !rc.running(n) {
			continue
		}
		c := rc.nodeClient(n)
		err := func() error {
			info, err := c.ClusterInfo(ctx).Result()
			if err != nil {
				return fmt.Errorf("%s: %w", n.Addr(), err)
			}
			if !strings.Contains(info, "cluster_state:ok") {
				return fmt.Errorf("%s: cluster state not ok", n.Addr())
			}
			slots, err := c.ClusterSlots(ctx).Result()
			if err != nil {
				return fmt.Errorf("%s: %w", n.Addr(), err)
			}
			var b strings.Builder
			for _, s := range slots {
				fmt.Fprintf(&b, "%d-%d:%s;", s.Start, s.End, s.Nodes[0].Addr)
			}
			if view == "" {
				view = b.String()
			} else if view != b.String() {
				return fmt.Errorf("nodes disagree on the slot map")
			}
			repl, err := c.Info(ctx, "replication").Result()
			if err != nil {
				return fmt.Errorf("%s: %w", n.Addr(), err)
			}
			if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
				return fmt.Errorf("%s: replica not in sync with its master", n.Addr())
			}
			return nil
		}()
		c.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// FailoverMasterOf promotes the replica of the master serving key's slot
// with CLUSTER FAILOVER (a manual, graceful failover: the old master stops
// writes, its replica catches up and takes over, the old master becomes
// its replica), waits until the cluster is healthy again and returns the
// new master.
func (rc *RedisCluster) FailoverMasterOf(key string) *Redis {
	rc.t.Helper()
	old := rc.MasterOf(key)
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	replica := rc.ReplicaOf(old)
	c := rc.nodeClient(replica)
	err := c.Do(ctx, "CLUSTER", "FAILOVER").Err()
	c.Close()
	if err != nil {
		rc.t.Fatalf("testsvc: CLUSTER FAILOVER on %s: %v", replica.Addr(), err)
	}
	for {
		if m, err := rc.masterOf(ctx, key); err == nil && m == replica {
			if err := rc.WaitHealthy(ctx); err != nil {
				rc.t.Fatalf("testsvc: redis cluster after failover to %s: %v", replica.Addr(), err)
			}
			return replica
		}
		select {
		case <-ctx.Done():
			rc.t.Fatalf("testsvc: replica %s not promoted by CLUSTER FAILOVER", replica.Addr())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
