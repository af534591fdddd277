//go:build e2e_real

package realcluster

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// storesForExternal are a Redis and a PostgreSQL run the way a team runs its
// own, from the images the official ones stand for, with passwords.
const storesForExternal = `apiVersion: apps/v1
kind: Deployment
metadata: {name: redis}
spec:
  selector: {matchLabels: {app: redis}}
  template:
    metadata: {labels: {app: redis}}
    spec:
      containers:
      - name: redis
        image: redis:7.0
        args: [redis-server, --requirepass, ext-redis-pw, --appendonly, "yes"]
        ports: [{containerPort: 6379}]
        readinessProbe: {tcpSocket: {port: 6379}, periodSeconds: 2}
---
apiVersion: v1
kind: Service
metadata: {name: redis}
spec:
  selector: {app: redis}
  ports: [{port: 6379}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: postgres}
spec:
  selector: {matchLabels: {app: postgres}}
  template:
    metadata: {labels: {app: postgres}}
    spec:
      containers:
      - name: postgres
        image: postgres:15
        env:
        - {name: POSTGRES_USER, value: tandem}
        - {name: POSTGRES_PASSWORD, value: ext-pg-pw}
        - {name: POSTGRES_DB, value: tandem}
        ports: [{containerPort: 5432}]
        readinessProbe:
          exec: {command: [pg_isready, -U, tandem, -h, 127.0.0.1]}
          periodSeconds: 2
---
apiVersion: v1
kind: Service
metadata: {name: postgres}
spec:
  selector: {app: postgres}
  ports: [{port: 5432}]
`

// external applies config/samples' external-stores sample, its Secrets
// pointed at stores deployed here, and edits through it.
func external(t *testing.T, k *kube) {
	const ns = "ext"
	k.k(t, "create", "namespace", ns)
	k.apply(t, ns, storesForExternal)
	k.k(t, "-n", ns, "rollout", "status", "deployment/redis", "deployment/postgres", "--timeout=3m")

	b, err := os.ReadFile(filepath.Join(k.root, "config", "samples", "collab_v1alpha1_collabcluster_external.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	sample := string(b)
	for old, repl := range map[string]string{
		"redis://:change-me@redis.example.test:6379/0":                                  "redis://:ext-redis-pw@redis." + ns + ".svc:6379/0",
		"postgres://tandem:change-me@postgres.example.test:5432/tandem?sslmode=disable": "postgres://tandem:ext-pg-pw@postgres." + ns + ".svc:5432/tandem?sslmode=disable",
	} {
		if !strings.Contains(sample, old) {
			t.Fatalf("the external sample no longer holds %q; update this test with it", old)
		}
		sample = strings.ReplaceAll(sample, old, repl)
	}
	k.apply(t, ns, sample)
	took := k.waitReady(t, ns, "notes", 10*time.Minute)
	t.Logf("external-stores CollabCluster Ready %s after apply", took.Round(time.Second))

	doc := fmt.Sprintf("ext-%d", time.Now().Unix())
	url := "ws://" + k.serviceAddr(t, ns, "notes") + "/v1/docs/" + doc + "/ws"
	w := newWriters(t, doc)
	defer w.close()
	for i := 0; i < 3; i++ {
		// The sample runs anonymous mode for one web origin.
		w.add(t.Context(), url, "", "https://notes.example.test", 50*time.Millisecond)
	}
	time.Sleep(3 * time.Second)
	w.stopEditing(t.Context())
	pgPod := k.get(t, "-n", ns, "pods", "-l", "app=postgres").items()[0].str("metadata", "name")
	eventually(t, 2*time.Minute, "every acknowledged op in the external PostgreSQL", func() (bool, string) {
		rows := k.psql(t, ns, pgPod, "tandem", "tandem",
			fmt.Sprintf("SELECT client_id, seq FROM operations WHERE doc_id = '%s'", doc))
		miss := w.missing(rows)
		return len(miss) == 0, fmt.Sprintf("%d of %d missing", len(miss), w.ackCount())
	})
	if r := k.restarts(t, ns); len(r) > 0 {
		t.Errorf("containers restarted: %v", r)
	}
}
