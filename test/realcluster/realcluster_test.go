//go:build e2e_real

package realcluster

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandem-dev/tandem/internal/specs"
)

const (
	operatorNS = "tandem-system"
	// image is what hack/real-cluster/build-images.sh builds from the Dockerfile.
	imageRepo = "ghcr.io/tandem-dev/tandem"
	imageTag  = "e2e"
)

// managed is the managed sample's CollabCluster, with JWT auth, under name.
func managed(name, retention string) string {
	return fmt.Sprintf(`apiVersion: collab.tandem.dev/v1alpha1
kind: CollabCluster
metadata:
  name: %s
spec:
  runtime:
    replicas: 2
    auth:
      mode: jwt
    flush:
      interval: 500ms
      batchSize: 500
  redis:
    managed:
      appendFsync: everysec
      storage: {size: 1Gi}
  postgres:
    managed:
      storage: {size: 2Gi}
  storageRetentionPolicy: %s
`, name, retention)
}

// TestRealCluster is one ordered story, as a person installing Tandem would
// live it; each step needs the ones before it.
func TestRealCluster(t *testing.T) {
	k := newKube(t)
	ctx := t.Context()
	const ns = "real"
	const cc = "docs"
	step := func(name string, f func(t *testing.T)) {
		if !t.Run(name, f) {
			t.FailNow()
		}
	}
	var key []byte
	var url string
	doc := fmt.Sprintf("real-%d", time.Now().Unix())
	pgPod := cc + "-postgres-0"
	// stored are the (client_id, seq) rows of doc in the managed PostgreSQL.
	stored := func(t testing.TB) []string {
		return k.psql(t, ns, pgPod, specs.PostgresUser, specs.PostgresDatabase,
			fmt.Sprintf("SELECT client_id, seq FROM operations WHERE doc_id = '%s'", doc))
	}
	// allStored waits until every acknowledged op of w is a row.
	allStored := func(t *testing.T, w *writers) {
		t.Helper()
		eventually(t, 3*time.Minute, "every acknowledged op in PostgreSQL", func() (bool, string) {
			miss := w.missing(stored(t))
			return len(miss) == 0, fmt.Sprintf("%d of %d acknowledged ops not in PostgreSQL, e.g. %v", len(miss), w.ackCount(), first(miss, 5))
		})
		rows := k.psql(t, ns, pgPod, specs.PostgresUser, specs.PostgresDatabase,
			fmt.Sprintf("SELECT count(*), coalesce(max(rev), 0) FROM operations WHERE doc_id = '%s'", doc))
		var count, maxRev int64
		if len(rows) != 1 {
			t.Fatalf("count query: %v", rows)
		}
		fmt.Sscanf(rows[0], "%d,%d", &count, &maxRev)
		if count != maxRev {
			t.Fatalf("PostgreSQL holds %d ops of %s but its last revision is %d: a gap or a duplicate", count, doc, maxRev)
		}
		t.Logf("%d acknowledged ops, %d revisions in PostgreSQL", w.ackCount(), count)
	}

	step("helm install runs the operator in the cluster", func(t *testing.T) {
		k.helm(t, "install", "tandem", filepath.Join(k.root, "charts", "tandem"),
			"--namespace", operatorNS, "--create-namespace",
			"--set", "image.repository="+imageRepo, "--set", "image.tag="+imageTag,
			"--wait", "--timeout", "5m")
		pods := k.get(t, "-n", operatorNS, "pods").items()
		if len(pods) == 0 {
			t.Fatal("no operator pod")
		}
		for _, p := range pods {
			if p.str("status", "phase") != "Running" {
				t.Fatalf("operator pod %s is %s", p.str("metadata", "name"), p.str("status", "phase"))
			}
			containers, _ := p.field("spec", "containers").([]any)
			img, _ := containers[0].(map[string]any)["image"].(string)
			if img != imageRepo+":"+imageTag {
				t.Fatalf("operator pod runs %q, want the image built from the Dockerfile, %s:%s", img, imageRepo, imageTag)
			}
		}
	})

	step("a managed CollabCluster becomes Ready with no restart", func(t *testing.T) {
		k.k(t, "create", "namespace", ns)
		k.apply(t, ns, managed(cc, "Retain"))
		took := k.waitReady(t, ns, cc, 10*time.Minute)
		t.Logf("CollabCluster %s Ready %s after kubectl apply", cc, took.Round(time.Second))
		if r := k.restarts(t, ns); len(r) > 0 {
			t.Fatalf("containers restarted on the way to Ready: %v", r)
		}
		if n := len(k.pods(t, ns, cc, specs.ComponentRuntime)); n != 2 {
			t.Fatalf("%d runtime pods, want 2", n)
		}
		key = k.secretValue(t, ns, cc+"-jwt", specs.KeyJWT)
		url = "ws://" + k.serviceAddr(t, ns, cc) + "/v1/docs/" + doc + "/ws"
	})

	step("clients on both runtime pods edit through the Service and converge", func(t *testing.T) {
		w := newWriters(t, doc)
		defer w.close()
		pods := k.pods(t, ns, cc, specs.ComponentRuntime)
		// kube-proxy spreads connections at random: add clients until every
		// runtime pod serves at least one.
		for i := 0; ; i++ {
			w.add(ctx, url, token(t, key, fmt.Sprintf("user%d", i), doc), "", 50*time.Millisecond)
			if i < 3 {
				continue
			}
			if everyPodServes(k, ns, pods) {
				break
			}
			if i >= 20 {
				t.Fatalf("20 clients and still a runtime pod without a connection")
			}
		}
		time.Sleep(5 * time.Second)
		text, rev := w.stopEditing(ctx)
		if int64(w.ackCount()) == 0 || rev == 0 || len(text) == 0 {
			t.Fatalf("no edits went through: %d acks, revision %d", w.ackCount(), rev)
		}
		allStored(t, w)
	})

	step("a runtime pod deleted mid-edit loses no acknowledged op", func(t *testing.T) {
		w := newWriters(t, doc)
		defer w.close()
		for i := 0; i < 6; i++ {
			w.add(ctx, url, token(t, key, fmt.Sprintf("del%d", i), doc), "", 40*time.Millisecond)
		}
		time.Sleep(3 * time.Second)
		victim := k.pods(t, ns, cc, specs.ComponentRuntime)[0].str("metadata", "name")
		k.k(t, "-n", ns, "delete", "pod", victim, "--wait=false")
		time.Sleep(3 * time.Second)
		eventually(t, 3*time.Minute, "the runtime back at 2 ready pods", func() (bool, string) {
			o := k.get(t, "-n", ns, "collabcluster", cc)
			return o.num("status", "readyReplicas") == 2, fmt.Sprintf("readyReplicas %d", o.num("status", "readyReplicas"))
		})
		time.Sleep(3 * time.Second)
		w.stopEditing(ctx)
		allStored(t, w)
		if w.reconnects() == 0 {
			t.Logf("no client was on the deleted pod %s", victim)
		}
	})

	step("kubectl scale 2 -> 3 -> 1, readyReplicas follows", func(t *testing.T) {
		for _, n := range []int{3, 1, 2} {
			k.k(t, "-n", ns, "scale", "collabcluster/"+cc, fmt.Sprintf("--replicas=%d", n))
			eventually(t, 3*time.Minute, fmt.Sprintf("readyReplicas %d", n), func() (bool, string) {
				o := k.get(t, "-n", ns, "collabcluster", cc)
				pods := k.pods(t, ns, cc, specs.ComponentRuntime)
				got := o.num("status", "readyReplicas")
				return got == int64(n) && len(pods) == n, fmt.Sprintf("readyReplicas %d, %d pods", got, len(pods))
			})
		}
	})

	step("a rolling update while clients edit loses nothing; clients reconnect by themselves", func(t *testing.T) {
		w := newWriters(t, doc)
		defer w.close()
		for i := 0; i < 6; i++ {
			w.add(ctx, url, token(t, key, fmt.Sprintf("roll%d", i), doc), "", 40*time.Millisecond)
		}
		time.Sleep(2 * time.Second)
		before := map[string]bool{}
		for _, p := range k.pods(t, ns, cc, specs.ComponentRuntime) {
			before[p.str("metadata", "name")] = true
		}
		// A new memory limit changes the pod template: the Deployment rolls.
		k.k(t, "-n", ns, "patch", "collabcluster", cc, "--type=merge", "-p",
			`{"spec":{"runtime":{"resources":{"requests":{"cpu":"100m","memory":"128Mi"},"limits":{"memory":"384Mi"}}}}}`)
		eventually(t, 5*time.Minute, "every runtime pod replaced and ready", func() (bool, string) {
			pods := k.pods(t, ns, cc, specs.ComponentRuntime)
			o := k.get(t, "-n", ns, "collabcluster", cc)
			for _, p := range pods {
				if before[p.str("metadata", "name")] {
					return false, "old pod " + p.str("metadata", "name") + " still there"
				}
			}
			return len(pods) == 2 && o.num("status", "readyReplicas") == 2, fmt.Sprintf("%d pods, readyReplicas %d", len(pods), o.num("status", "readyReplicas"))
		})
		time.Sleep(3 * time.Second)
		w.stopEditing(ctx)
		if w.reconnects() == 0 {
			t.Fatal("every runtime pod was replaced, yet no client reconnected")
		}
		for _, c := range w.clients {
			if !c.Connected() {
				t.Fatalf("client %s is not connected after the rollout: %v", c.ClientID(), c.Err())
			}
		}
		allStored(t, w)
	})

	step("Redis and PostgreSQL pods deleted: both recover, the flush lag drains", func(t *testing.T) {
		for _, store := range []string{specs.ComponentRedis, specs.ComponentPostgres} {
			w := newWriters(t, doc)
			for i := 0; i < 4; i++ {
				w.add(ctx, url, token(t, key, fmt.Sprintf("%s%d", store, i), doc), "", 50*time.Millisecond)
			}
			time.Sleep(2 * time.Second)
			pod := cc + "-" + store + "-0"
			k.k(t, "-n", ns, "delete", "pod", pod)
			k.k(t, "-n", ns, "wait", "--for=condition=Ready", "pod/"+pod, "--timeout=3m")
			k.waitReady(t, ns, cc, 5*time.Minute)
			time.Sleep(3 * time.Second)
			w.stopEditing(ctx)
			allStored(t, w)
			for _, p := range k.pods(t, ns, cc, specs.ComponentRuntime) {
				name := p.str("metadata", "name")
				eventually(t, 2*time.Minute, "flush lag 0 on "+name, func() (bool, string) {
					v, err := k.metric(ns, name, "tandem_flush_lag_commits")
					return err == nil && v == 0, fmt.Sprintf("lag %v, %v", v, err)
				})
			}
			w.close()
		}
	})

	step("the operator pod deleted: no child changes", func(t *testing.T) {
		before := children(t, k, ns)
		k.k(t, "-n", operatorNS, "delete", "pods", "--all")
		k.k(t, "-n", operatorNS, "rollout", "status", "deployment", "--timeout=3m")
		time.Sleep(20 * time.Second) // a full resync of the new leader
		after := children(t, k, ns)
		for name, v := range before {
			if after[name] != v {
				t.Errorf("%s changed after the operator restarted: %s -> %s", name, v, after[name])
			}
		}
	})

	step("the browser editor works against the cluster", func(t *testing.T) {
		browserAgainst(t, k, ns, cc, key)
	})

	step("external stores: the external sample on a Redis and PostgreSQL deployed here", func(t *testing.T) {
		external(t, k)
	})

	step("storageRetentionPolicy: Retain keeps the PVCs, Delete removes them", func(t *testing.T) {
		const gone = "scratch"
		k.apply(t, ns, managed(gone, "Delete"))
		k.waitReady(t, ns, gone, 10*time.Minute)
		pvcs := func(name string) int {
			return len(k.get(t, "-n", ns, "pvc", "-l", specs.LabelInstance+"="+name).items())
		}
		if n := pvcs(gone); n != 2 {
			t.Fatalf("%s has %d PVCs, want 2", gone, n)
		}
		k.k(t, "-n", ns, "delete", "collabcluster", gone, "--wait=true", "--timeout=3m")
		eventually(t, 3*time.Minute, "the Delete cluster's PVCs removed", func() (bool, string) {
			n := pvcs(gone)
			return n == 0, fmt.Sprintf("%d PVCs left", n)
		})
		k.k(t, "-n", ns, "delete", "collabcluster", cc, "--wait=true", "--timeout=3m")
		eventually(t, 3*time.Minute, "the Retain cluster's StatefulSets removed", func() (bool, string) {
			n := len(k.get(t, "-n", ns, "statefulsets", "-l", specs.LabelInstance+"="+cc).items())
			return n == 0, fmt.Sprintf("%d StatefulSets left", n)
		})
		time.Sleep(10 * time.Second)
		if n := pvcs(cc); n != 2 {
			t.Fatalf("the Retain cluster has %d PVCs after deletion, want its 2", n)
		}
	})
}

func first(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// everyPodServes: every runtime pod reports at least one connection.
func everyPodServes(k *kube, ns string, pods []obj) bool {
	for _, p := range pods {
		v, err := k.metric(ns, p.str("metadata", "name"), "tandem_connections")
		if err != nil || v < 1 {
			return false
		}
	}
	return true
}

// children is every object the operator writes for the CollabClusters in ns,
// keyed by kind/name, with what the operator itself decides: the
// generation of objects whose status other controllers write (a spec write
// bumps it), the resourceVersion of the rest.
func children(t *testing.T, k *kube, ns string) map[string]string {
	out := map[string]string{}
	for _, kind := range []string{"deployments", "statefulsets", "services", "configmaps", "secrets", "poddisruptionbudgets", "networkpolicies", "ingresses"} {
		for _, o := range k.get(t, "-n", ns, kind, "-l", specs.LabelManagedBy).items() {
			v := o.str("metadata", "resourceVersion")
			if kind == "deployments" || kind == "statefulsets" || kind == "poddisruptionbudgets" {
				v = fmt.Sprint(o.num("metadata", "generation"))
			}
			out[kind+"/"+o.str("metadata", "name")] = v
		}
	}
	if len(out) == 0 {
		t.Fatal("no operator-managed object found")
	}
	return out
}

// browserAgainst runs the editor's two-browser test against the cluster's
// runtime Service through kubectl port-forward.
func browserAgainst(t *testing.T, k *kube, ns, cc string, key []byte) {
	port := 18000 + time.Now().Nanosecond()%1000
	pf := exec.CommandContext(t.Context(), k.kubectl, "-n", ns, "port-forward", "--address", "127.0.0.1",
		"service/"+cc, fmt.Sprintf("%d:%d", port, specs.ServicePort))
	var pfOut strings.Builder
	pf.Stdout, pf.Stderr = &pfOut, &pfOut
	if err := pf.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pf.Process.Kill(); _ = pf.Wait() }()
	eventually(t, 30*time.Second, "kubectl port-forward", func() (bool, string) {
		return strings.Contains(pfOut.String(), "Forwarding from"), pfOut.String()
	})
	const test = "TestTwoBrowsersConverge"
	cmd := exec.CommandContext(t.Context(), "go", "test", "-count=1", "-v", "-run", "^"+test+"$", "./test/browser/")
	cmd.Dir = k.root
	// CI=true: the browser suite fails instead of skipping without Chromium.
	cmd.Env = append(os.Environ(), "CI=true",
		fmt.Sprintf("TANDEM_BROWSER_TARGET=http://127.0.0.1:%d", port),
		"TANDEM_BROWSER_JWT_KEY="+string(key))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+test) {
		t.Fatalf("browser test against the cluster: %v\n%s\nport-forward: %s", err, out, pfOut.String())
	}
	t.Logf("%s passed in Chromium against the cluster through kubectl port-forward", test)
}
