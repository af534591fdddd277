//go:build e2e

// Package e2e installs the Helm chart on a kwokctl control plane (real
// kube-apiserver, etcd, kube-controller-manager and kube-scheduler; fake
// kwok nodes), runs the operator binary with the chart's ServiceAccount
// permissions, and walks a CollabCluster through its life: create, scale,
// secret rotation, drift, degraded external services, deletion, chart
// upgrade and uninstall. Run with `make test-e2e`.
package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

const (
	releaseName = "tandem"
	releaseNS   = "tandem-system"
	operatorSA  = "tandem" // the chart's ServiceAccount for release "tandem"
	appNS       = "e2e"
	crdName     = "collabclusters.collab.tandem.dev"

	managedSample  = "config/samples/collab_v1alpha1_collabcluster.yaml"
	externalSample = "config/samples/collab_v1alpha1_collabcluster_external.yaml"

	readyTimeout = 3 * time.Minute
	stepTimeout  = 2 * time.Minute
)

// sample is a CollabCluster from config/samples; a sample file may also
// carry the Secrets the CollabCluster refers to.
type sample struct {
	obj     map[string]any   // the CollabCluster
	secrets []map[string]any // Secrets defined next to it
	name    string
}

func loadSample(t *testing.T, root, path string) sample {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, path))
	if err != nil {
		t.Fatalf("read sample %s: %v", path, err)
	}
	var s sample
	for _, doc := range strings.Split(string(b), "\n---") {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatalf("parse sample %s: %v", path, err)
		}
		if len(obj) == 0 {
			continue
		}
		if meta, ok := obj["metadata"].(map[string]any); ok {
			delete(meta, "namespace") // applied into the test namespace
		}
		switch str(obj, "kind") {
		case "CollabCluster":
			if s.obj != nil {
				t.Fatalf("sample %s holds more than one CollabCluster", path)
			}
			s.obj = obj
		case "Secret":
			s.secrets = append(s.secrets, obj)
		default:
			t.Fatalf("sample %s: unexpected kind %q", path, str(obj, "kind"))
		}
	}
	if s.obj == nil {
		t.Fatalf("sample %s holds no CollabCluster", path)
	}
	s.name = str(s.obj, "metadata", "name")
	return s
}

// renamed returns a copy of the sample under another name, with spec edits.
func (s sample) renamed(t *testing.T, name string, edit func(spec map[string]any)) sample {
	t.Helper()
	b, err := yaml.Marshal(s.obj)
	if err != nil {
		t.Fatalf("copy sample: %v", err)
	}
	var obj map[string]any
	if err := yaml.Unmarshal(b, &obj); err != nil {
		t.Fatalf("copy sample: %v", err)
	}
	obj["metadata"].(map[string]any)["name"] = name
	if edit != nil {
		spec, _ := obj["spec"].(map[string]any)
		edit(spec)
	}
	return sample{obj: obj, name: name} // its Secrets, if any, are the original's
}

// yaml renders the sample's Secrets followed by the CollabCluster.
func (s sample) yaml(t *testing.T) string {
	t.Helper()
	var docs []string
	for _, o := range append(append([]map[string]any{}, s.secrets...), s.obj) {
		b, err := yaml.Marshal(o)
		if err != nil {
			t.Fatalf("marshal sample %s: %v", s.name, err)
		}
		docs = append(docs, string(b))
	}
	return strings.Join(docs, "---\n")
}

func randomB64(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("random: %v", err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// podTemplateSecrets lists the Secrets a Deployment's pods use through
// volumes, env valueFrom and envFrom.
func podTemplateSecrets(dep map[string]any) []string {
	seen := map[string]bool{}
	var out []string
	add := func(n string) {
		if n != "" && !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	vols, _ := field(dep, "spec", "template", "spec", "volumes").([]any)
	for _, v := range vols {
		add(str(v, "secret", "secretName"))
		srcs, _ := field(v, "projected", "sources").([]any)
		for _, src := range srcs {
			add(str(src, "secret", "name"))
		}
	}
	containers, _ := field(dep, "spec", "template", "spec", "containers").([]any)
	for _, c := range containers {
		envs, _ := field(c, "env").([]any)
		for _, e := range envs {
			add(str(e, "valueFrom", "secretKeyRef", "name"))
		}
		froms, _ := field(c, "envFrom").([]any)
		for _, f := range froms {
			add(str(f, "secretRef", "name"))
		}
	}
	return out
}

// secretRef is one external Secret a sample refers to.
type secretRef struct{ name, key, value string }

func externalSecrets(t *testing.T, s sample) []secretRef {
	t.Helper()
	var refs []secretRef
	if n := str(s.obj, "spec", "redis", "external", "urlSecretRef", "name"); n != "" {
		refs = append(refs, secretRef{n, str(s.obj, "spec", "redis", "external", "urlSecretRef", "key"), "redis://:e2e-password@redis.e2e.invalid:6379/0"})
	}
	if n := str(s.obj, "spec", "postgres", "external", "dsnSecretRef", "name"); n != "" {
		refs = append(refs, secretRef{n, str(s.obj, "spec", "postgres", "external", "dsnSecretRef", "key"), "postgres://tandem:e2e-password@postgres.e2e.invalid:5432/tandem?sslmode=disable"})
	}
	if len(refs) == 0 {
		t.Fatalf("external sample %s refers to no Secret (spec.redis.external.urlSecretRef / spec.postgres.external.dsnSecretRef)", s.name)
	}
	return withSampleValues(s, refs)
}

// withSampleValues takes each Secret's value from the sample file when the
// sample defines that Secret.
func withSampleValues(s sample, refs []secretRef) []secretRef {
	for i, r := range refs {
		for _, sec := range s.secrets {
			if str(sec, "metadata", "name") != r.name {
				continue
			}
			if v := str(sec, "stringData", r.key); v != "" {
				refs[i].value = v
			}
		}
	}
	return refs
}

func secretManifest(r secretRef) string {
	return fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\ntype: Opaque\nstringData:\n  %s: %q\n", r.name, r.key, r.value)
}

func TestCollabClusterEndToEnd(t *testing.T) {
	began := time.Now()
	suite := t // owns what outlives a single step (the operator process)
	c := startCluster(t)
	root := c.root
	managed := loadSample(t, root, managedSample)
	external := loadSample(t, root, externalSample)
	// A second managed cluster whose volumes are deleted with it, to see both
	// storageRetentionPolicy values on real claims.
	deleting := managed.renamed(t, managed.name+"-del", func(spec map[string]any) {
		spec["storageRetentionPolicy"] = "Delete"
	})

	step := func(name string, f func(t *testing.T)) {
		t.Helper()
		start := time.Now()
		if !t.Run(name, f) {
			t.Fatalf("step %q failed; later steps depend on it", name)
		}
		t.Logf("step %q took %s", name, time.Since(start).Round(time.Second))
	}

	var runtimeImage string
	step("helm install", func(t *testing.T) {
		c.helm(t, "install", releaseName, filepath.Join(root, "charts", "tandem"),
			"--namespace", releaseNS, "--create-namespace", "--wait", "--timeout", "3m")
		c.k(t, "wait", "--for=condition=Established", "crd/"+crdName, "--timeout=60s")
		crd := c.getJSON(t, "crd", crdName)
		if got := str(crd, "metadata", "annotations", "helm.sh/resource-policy"); got != "keep" {
			t.Errorf("CRD annotation helm.sh/resource-policy = %q, want keep", got)
		}
		// The operator pod lands on a kwok node and is reported ready there,
		// though no container runs.
		dep := c.getJSON(t, "deployment", releaseName, "-n", releaseNS)
		if num(dep, "status", "readyReplicas") != 1 {
			t.Errorf("operator Deployment readyReplicas = %d, want 1", num(dep, "status", "readyReplicas"))
		}
		containers, _ := field(dep, "spec", "template", "spec", "containers").([]any)
		if len(containers) != 1 {
			t.Fatalf("operator Deployment has %d containers, want 1", len(containers))
		}
		envs, _ := field(containers[0], "env").([]any)
		for _, e := range envs {
			if str(e, "name") == "RUNTIME_IMAGE" {
				runtimeImage = str(e, "value")
			}
		}
		if runtimeImage == "" || runtimeImage != str(containers[0], "image") {
			t.Fatalf("RUNTIME_IMAGE %q must equal the operator image %q", runtimeImage, str(containers[0], "image"))
		}
	})

	var op *operator
	step("operator runs with the chart's ServiceAccount", func(t *testing.T) {
		sa := "system:serviceaccount:" + releaseNS + ":" + operatorSA
		// The impersonated identity is really restricted: it may manage
		// runtime Deployments but not touch cluster RBAC.
		if words := strings.Fields(c.k(t, "auth", "can-i", "create", "deployments", "-n", appNS, "--as", sa)); len(words) == 0 || words[len(words)-1] != "yes" {
			t.Fatalf("chart RBAC: %s cannot create deployments: %v", sa, words)
		}
		ctxOut, err := c.kubectl(t.Context(), "auth", "can-i", "create", "clusterroles", "--as", sa)
		// kubectl prints a warning before the answer; the answer is the last word.
		if words := strings.Fields(ctxOut); len(words) == 0 || words[len(words)-1] != "no" {
			t.Fatalf("chart RBAC too broad: %s can create clusterroles (%v): %s", sa, err, ctxOut)
		}
		kubeconfig := impersonatingKubeconfig(t, c.kubeconfig, suite.TempDir(), releaseNS, operatorSA)
		metrics, health := freePort(t), freePort(t)
		op = startOperator(t, suite, root, kubeconfig,
			[]string{"RUNTIME_IMAGE=" + runtimeImage, "WATCH_NAMESPACE=", "POD_NAMESPACE=" + releaseNS},
			"--leader-elect",
			"--leader-election-namespace="+releaseNS,
			fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", metrics),
			fmt.Sprintf("--health-probe-bind-address=127.0.0.1:%d", health),
		)
		// Holding the leader Lease proves the chart's leader-election Role.
		eventually(t, stepTimeout, "the operator to acquire its leader Lease", func() (bool, string) {
			op.alive(t)
			leases := items(c.getJSON(t, "leases.coordination.k8s.io", "-n", releaseNS))
			for _, l := range leases {
				if h := str(l, "spec", "holderIdentity"); h != "" {
					return true, ""
				}
			}
			return false, fmt.Sprintf("leases: %v", names(leases))
		})
	})

	step("apply samples", func(t *testing.T) {
		c.k(t, "create", "namespace", appNS)
		// The Secrets an external sample refers to exist before it does.
		for _, r := range externalSecrets(t, external) {
			c.kApply(t, appNS, secretManifest(r))
		}
		for _, s := range []sample{managed, deleting, external} {
			c.kApply(t, appNS, s.yaml(t))
		}
		for _, s := range []sample{managed, deleting, external} {
			ctx := t.Context()
			if _, err := c.kubectl(ctx, "wait", "--for=condition=Ready", "collabcluster/"+s.name, "-n", appNS, "--timeout="+readyTimeout.String()); err != nil {
				op.alive(t)
				t.Fatalf("%v\n--- collabcluster ---\n%s\n--- events ---\n%s", err,
					c.k(t, "get", "collabcluster", s.name, "-n", appNS, "-o", "yaml"),
					c.k(t, "get", "events", "-n", appNS, "--sort-by=.lastTimestamp"))
			}
		}
	})

	step("status and printer columns", func(t *testing.T) {
		for _, s := range []sample{managed, external} {
			obj := c.getJSON(t, "collabcluster", s.name, "-n", appNS)
			if got, want := num(obj, "status", "observedGeneration"), num(obj, "metadata", "generation"); got != want {
				t.Errorf("%s: observedGeneration %d, want %d", s.name, got, want)
			}
			endpoint := str(obj, "status", "endpoint")
			if host := str(obj, "spec", "ingress", "host"); field(obj, "spec", "ingress", "enabled") == true {
				if !strings.Contains(endpoint, host) {
					t.Errorf("%s: endpoint %q does not name the ingress host %q", s.name, endpoint, host)
				}
			} else {
				// Without an ingress the endpoint is the runtime Service's address.
				svcs := c.owned(t, "services", appNS, str(obj, "metadata", "uid"))
				found := false
				for _, svc := range svcs {
					n := str(svc, "metadata", "name")
					if str(svc, "spec", "clusterIP") != "None" && strings.Contains(endpoint, n) {
						found = true
					}
				}
				if !found {
					t.Errorf("%s: endpoint %q names none of its Services %v", s.name, endpoint, names(svcs))
				}
			}
			if str(obj, "status", "selector") == "" {
				t.Errorf("%s: status.selector is empty (needed by the scale subresource)", s.name)
			}
			// kubectl get collab shows the printer columns with these values.
			out := c.k(t, "get", "collab", s.name, "-n", appNS)
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 2 {
				t.Fatalf("kubectl get collab %s: want a header and one row, got:\n%s", s.name, out)
			}
			header := strings.Fields(lines[0])
			wantHeader := []string{"NAME", "REPLICAS", "READY", "STATUS", "ENDPOINT", "AGE"}
			if strings.Join(header, " ") != strings.Join(wantHeader, " ") {
				t.Fatalf("printer columns %v, want %v", header, wantHeader)
			}
			row := strings.Fields(lines[1])
			if len(row) != len(wantHeader) {
				t.Fatalf("kubectl get collab row %q: want %d columns", lines[1], len(wantHeader))
			}
			wantRow := map[int]string{
				0: s.name,
				1: fmt.Sprint(num(obj, "spec", "runtime", "replicas")),
				2: fmt.Sprint(num(obj, "status", "readyReplicas")),
				3: str(obj, "status", "phase"),
				4: endpoint,
			}
			for i, want := range wantRow {
				if row[i] != want {
					t.Errorf("%s column %s = %q, want %q", s.name, header[i], row[i], want)
				}
			}
			if row[1] != row[2] {
				t.Errorf("%s: Ready %s != Replicas %s on a Ready cluster", s.name, row[2], row[1])
			}
		}
	})

	var crUID string
	runtimeDeployment := func(t *testing.T) map[string]any {
		t.Helper()
		deps := c.owned(t, "deployments", appNS, crUID)
		if len(deps) != 1 {
			t.Fatalf("want one runtime Deployment owned by %s, got %v", managed.name, names(deps))
		}
		return deps[0]
	}
	pdbs := func(t *testing.T) []map[string]any {
		return c.owned(t, "poddisruptionbudgets", appNS, crUID)
	}

	step("scale to 5 and back to 1", func(t *testing.T) {
		crUID = str(c.getJSON(t, "collabcluster", managed.name, "-n", appNS), "metadata", "uid")
		c.k(t, "scale", "collabcluster/"+managed.name, "-n", appNS, "--replicas=5")
		eventually(t, stepTimeout, "5 runtime pods scheduled on kwok nodes and reported ready", func() (bool, string) {
			op.alive(t)
			dep := runtimeDeployment(t)
			cr := c.getJSON(t, "collabcluster", managed.name, "-n", appNS)
			state := fmt.Sprintf("deployment spec.replicas=%d readyReplicas=%d; collabcluster readyReplicas=%d",
				num(dep, "spec", "replicas"), num(dep, "status", "readyReplicas"), num(cr, "status", "readyReplicas"))
			if num(dep, "spec", "replicas") != 5 || num(dep, "status", "readyReplicas") != 5 || num(cr, "status", "readyReplicas") != 5 {
				return false, state
			}
			// Every pod selected by the status selector runs on a kwok node.
			pods := items(c.getJSON(t, "pods", "-n", appNS, "-l", str(cr, "status", "selector")))
			scheduled := 0
			for _, p := range pods {
				if strings.HasPrefix(str(p, "spec", "nodeName"), "kwok-node-") && str(p, "status", "phase") == "Running" {
					scheduled++
				}
			}
			return scheduled == 5, fmt.Sprintf("%s; %d of %d pods running on kwok nodes", state, scheduled, len(pods))
		})
		if got := pdbs(t); len(got) != 1 {
			t.Fatalf("with 5 replicas want one PodDisruptionBudget, got %v", names(got))
		}
		c.k(t, "scale", "collabcluster/"+managed.name, "-n", appNS, "--replicas=1")
		eventually(t, stepTimeout, "the PodDisruptionBudget to go at 1 replica", func() (bool, string) {
			got := pdbs(t)
			return len(got) == 0 && num(runtimeDeployment(t), "spec", "replicas") == 1, fmt.Sprintf("pdbs %v", names(got))
		})
		c.k(t, "wait", "--for=condition=Ready", "collabcluster/"+managed.name, "-n", appNS, "--timeout=2m")
	})

	step("changing the JWT Secret rolls the runtime", func(t *testing.T) {
		dep := runtimeDeployment(t)
		depName := str(dep, "metadata", "name")
		before, _ := field(dep, "spec", "template", "metadata", "annotations").(map[string]any)
		genBefore := num(dep, "metadata", "generation")
		// The JWT Secret is the one the runtime pods use (mounted or through
		// the environment) that carries the signing key.
		jwtSecret := ""
		mounted := podTemplateSecrets(dep)
		for _, n := range mounted {
			if strings.Contains(strings.ToLower(n), "jwt") {
				jwtSecret = n
			}
		}
		if jwtSecret == "" {
			t.Fatalf("no JWT Secret among the Secrets the runtime pods use: %v", mounted)
		}
		secret := c.getJSON(t, "secret", jwtSecret, "-n", appNS)
		data, _ := secret["data"].(map[string]any)
		if len(data) == 0 {
			t.Fatalf("JWT Secret %s has no data", jwtSecret)
		}
		var patch strings.Builder
		patch.WriteString(`{"data":{`)
		first := true
		for k := range data {
			if !first {
				patch.WriteString(",")
			}
			first = false
			fmt.Fprintf(&patch, "%q:%q", k, base64.StdEncoding.EncodeToString([]byte(randomB64(t))))
		}
		patch.WriteString("}}")
		c.k(t, "patch", "secret", jwtSecret, "-n", appNS, "--type=merge", "-p", patch.String())
		eventually(t, stepTimeout, "the runtime pod template to change after the Secret change", func() (bool, string) {
			dep := c.getJSON(t, "deployment", depName, "-n", appNS)
			after, _ := field(dep, "spec", "template", "metadata", "annotations").(map[string]any)
			changed := fmt.Sprint(after) != fmt.Sprint(before)
			return changed && num(dep, "metadata", "generation") > genBefore,
				fmt.Sprintf("generation %d (was %d), annotations %v", num(dep, "metadata", "generation"), genBefore, after)
		})
		// The Deployment controller rolls out a new ReplicaSet.
		c.k(t, "rollout", "status", "deployment/"+depName, "-n", appNS, "--timeout=2m")
		rsets := c.owned(t, "replicasets", appNS, str(dep, "metadata", "uid"))
		if len(rsets) < 2 {
			t.Errorf("want a new ReplicaSet after the Secret change, have %v", names(rsets))
		}
	})

	step("a deleted runtime Deployment comes back", func(t *testing.T) {
		dep := runtimeDeployment(t)
		name, uid := str(dep, "metadata", "name"), str(dep, "metadata", "uid")
		c.k(t, "delete", "deployment", name, "-n", appNS, "--wait=true")
		eventually(t, stepTimeout, "the runtime Deployment to be recreated", func() (bool, string) {
			op.alive(t)
			got, ok := c.tryGetJSON(t, "deployment", name, "-n", appNS)
			if !ok {
				return false, "absent"
			}
			return str(got, "metadata", "uid") != uid && num(got, "status", "readyReplicas") >= 1,
				fmt.Sprintf("uid %s, readyReplicas %d", str(got, "metadata", "uid"), num(got, "status", "readyReplicas"))
		})
		c.k(t, "wait", "--for=condition=Ready", "collabcluster/"+managed.name, "-n", appNS, "--timeout=2m")
	})

	step("a missing external Secret degrades the cluster until it is back", func(t *testing.T) {
		ref := externalSecrets(t, external)[0]
		c.k(t, "delete", "secret", ref.name, "-n", appNS)
		eventually(t, stepTimeout, "Degraded naming Secret "+ref.name, func() (bool, string) {
			op.alive(t)
			obj := c.getJSON(t, "collabcluster", external.name, "-n", appNS)
			status, reason, msg := condition(obj, "Degraded")
			ready, _, _ := condition(obj, "Ready")
			return status == "True" && strings.Contains(msg, ref.name) && ready != "True",
				fmt.Sprintf("Degraded=%s (%s: %s), Ready=%s", status, reason, msg, ready)
		})
		c.kApply(t, appNS, secretManifest(ref))
		c.k(t, "wait", "--for=condition=Ready", "collabcluster/"+external.name, "-n", appNS, "--timeout=2m")
		obj := c.getJSON(t, "collabcluster", external.name, "-n", appNS)
		if status, _, msg := condition(obj, "Degraded"); status == "True" {
			t.Errorf("still Degraded after the Secret came back: %s", msg)
		}
		// With external services the operator runs no StatefulSet.
		if sts := c.owned(t, "statefulsets", appNS, str(obj, "metadata", "uid")); len(sts) != 0 {
			t.Errorf("external sample owns StatefulSets %v", names(sts))
		}
	})

	engineSteps(t, c, op, step)
	monitoringSteps(t, c, op, step)

	step("deleting CollabClusters garbage-collects children; claims follow storageRetentionPolicy", func(t *testing.T) {
		type claimSet struct {
			sample sample
			uid    string
			claims []string
			keep   bool
		}
		var sets []claimSet
		for _, s := range []sample{managed, deleting} {
			obj := c.getJSON(t, "collabcluster", s.name, "-n", appNS)
			uid := str(obj, "metadata", "uid")
			sts := c.owned(t, "statefulsets", appNS, uid)
			if len(sts) == 0 {
				t.Fatalf("%s: managed sample owns no StatefulSet", s.name)
			}
			// Claims of the StatefulSets' volumeClaimTemplates, bound by the
			// real PersistentVolume controller to the static volumes.
			var claims []string
			for _, pvc := range items(c.getJSON(t, "pvc", "-n", appNS)) {
				n := str(pvc, "metadata", "name")
				for _, st := range sts {
					if strings.HasSuffix(n, "-"+str(st, "metadata", "name")+"-0") {
						if phase := str(pvc, "status", "phase"); phase != "Bound" {
							t.Errorf("claim %s is %s, want Bound", n, phase)
						}
						claims = append(claims, n)
					}
				}
			}
			if len(claims) == 0 {
				t.Fatalf("%s: no claims of StatefulSets %v", s.name, names(sts))
			}
			sets = append(sets, claimSet{s, uid, claims, str(obj, "spec", "storageRetentionPolicy") != "Delete"})
		}
		for _, cs := range sets {
			c.k(t, "delete", "collabcluster", cs.sample.name, "-n", appNS, "--wait=true", "--timeout=1m")
		}
		for _, cs := range sets {
			eventually(t, stepTimeout, cs.sample.name+"'s children to be garbage-collected", func() (bool, string) {
				var left []string
				for _, kind := range []string{"deployments", "statefulsets", "services", "secrets", "configmaps", "poddisruptionbudgets", "networkpolicies", "ingresses"} {
					for _, n := range names(c.owned(t, kind, appNS, cs.uid)) {
						left = append(left, kind+"/"+n)
					}
				}
				return len(left) == 0, fmt.Sprintf("left: %v", left)
			})
			eventually(t, stepTimeout, fmt.Sprintf("%s's claims %v kept=%v", cs.sample.name, cs.claims, cs.keep), func() (bool, string) {
				var present []string
				for _, n := range cs.claims {
					if _, ok := c.tryGetJSON(t, "pvc", n, "-n", appNS); ok {
						present = append(present, n)
					}
				}
				if cs.keep {
					return len(present) == len(cs.claims), fmt.Sprintf("present: %v", present)
				}
				return len(present) == 0, fmt.Sprintf("present: %v", present)
			})
		}
	})

	step("helm upgrade with changed values", func(t *testing.T) {
		c.helm(t, "upgrade", releaseName, filepath.Join(root, "charts", "tandem"),
			"--namespace", releaseNS, "--wait", "--timeout", "3m",
			"--set", "logLevel=debug", "--set", "replicaCount=2", "--set", "image.tag=0.1.0-e2e")
		dep := c.getJSON(t, "deployment", releaseName, "-n", releaseNS)
		if num(dep, "spec", "replicas") != 2 || num(dep, "status", "readyReplicas") != 2 {
			t.Errorf("operator Deployment replicas %d ready %d, want 2/2", num(dep, "spec", "replicas"), num(dep, "status", "readyReplicas"))
		}
		containers, _ := field(dep, "spec", "template", "spec", "containers").([]any)
		args := fmt.Sprint(field(containers[0], "args"))
		if !strings.Contains(args, "--zap-log-level=debug") {
			t.Errorf("operator args %s lack the new log level", args)
		}
		if img := str(containers[0], "image"); !strings.HasSuffix(img, ":0.1.0-e2e") {
			t.Errorf("operator image %q, want tag 0.1.0-e2e", img)
		}
		if got := c.helm(t, "status", releaseName, "-n", releaseNS); !strings.Contains(got, "REVISION: 2") {
			t.Errorf("helm status after upgrade:\n%s", got)
		}
		// The CRD is a template, so the upgrade owns and updates it.
		crd := c.getJSON(t, "crd", crdName)
		if str(crd, "metadata", "annotations", "meta.helm.sh/release-name") != releaseName {
			t.Errorf("CRD not managed by the release after upgrade: annotations %v", field(crd, "metadata", "annotations"))
		}
		// The remaining cluster is still served by the operator.
		c.k(t, "wait", "--for=condition=Ready", "collabcluster/"+external.name, "-n", appNS, "--timeout=1m")
	})

	step("helm uninstall keeps the CRD and the CollabClusters", func(t *testing.T) {
		c.helm(t, "uninstall", releaseName, "--namespace", releaseNS, "--wait", "--timeout", "2m")
		if _, ok := c.tryGetJSON(t, "deployment", releaseName, "-n", releaseNS); ok {
			t.Errorf("operator Deployment still present after uninstall")
		}
		if _, ok := c.tryGetJSON(t, "clusterrole", releaseName+"-manager-role"); ok {
			t.Errorf("operator ClusterRole still present after uninstall")
		}
		if _, ok := c.tryGetJSON(t, "crd", crdName); !ok {
			t.Fatalf("CRD %s removed by helm uninstall; it must be kept", crdName)
		}
		if _, ok := c.tryGetJSON(t, "collabcluster", external.name, "-n", appNS); !ok {
			t.Fatalf("CollabCluster %s removed by helm uninstall", external.name)
		}
	})

	t.Logf("end-to-end suite finished in %s", time.Since(began).Round(time.Second))
}
