//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const enginesSample = "config/samples/collab_v1alpha1_collabcluster_engines.yaml"

// crdDir is the directory of a CRD set hack/tools.sh fetches from its Go
// module at the pinned version (gateway-api-standard,
// gateway-api-experimental, cloudnative-pg).
func crdDir(t *testing.T, root, set string) string {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(filepath.Join(root, "hack", "tools.sh"), "crds", set)
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("hack/tools.sh crds %s: %v\n%s", set, err, errb.String())
	}
	return strings.TrimSpace(out.String())
}

// installCRDs applies every CRD file of a set (server-side: some are larger
// than the last-applied annotation allows) and waits until they are served.
func (c *cluster) installCRDs(t *testing.T, root, set string, names ...string) {
	t.Helper()
	dir := crdDir(t, root, set)
	matches, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(matches) == 0 {
		t.Fatalf("no CRD files in %s (%v)", dir, err)
	}
	args := []string{"apply", "--server-side", "--force-conflicts"}
	for _, m := range matches {
		if filepath.Base(m) == "kustomization.yaml" {
			continue
		}
		args = append(args, "-f", m)
	}
	c.k(t, args...)
	// Polled rather than kubectl wait, which fails on a CRD that has no
	// status.conditions yet instead of waiting for them.
	for _, n := range names {
		eventually(t, stepTimeout, "CRD "+n+" established", func() (bool, string) {
			s, _, m := condition(c.getJSON(t, "crd", n), "Established")
			return s == "True", fmt.Sprintf("Established=%q %s", s, m)
		})
	}
}

// patchStatus writes a status as another controller would (the Gateway's,
// CloudNativePG's): a merge patch of the status subresource, as the admin.
func (c *cluster) patchStatus(t *testing.T, resource, ns, name string, status map[string]any) {
	t.Helper()
	b, err := json.Marshal(map[string]any{"status": status})
	if err != nil {
		t.Fatal(err)
	}
	c.k(t, "patch", resource, name, "-n", ns, "--subresource=status", "--type=merge", "-p", string(b))
}

// waitCondition waits until the CollabCluster's condition has the status
// and reason, and returns its message.
func (c *cluster) waitCondition(t *testing.T, op *operator, name, typ, status, reason string) string {
	t.Helper()
	var msg string
	eventually(t, stepTimeout, fmt.Sprintf("%s: %s=%s (%s)", name, typ, status, reason), func() (bool, string) {
		op.alive(t)
		obj := c.getJSON(t, "collabcluster", name, "-n", appNS)
		s, r, m := condition(obj, typ)
		msg = m
		return s == status && r == reason, fmt.Sprintf("%s=%s (%s: %s)", typ, s, r, m)
	})
	return msg
}

// noCondition waits until the CollabCluster no longer reports typ.
func (c *cluster) noCondition(t *testing.T, name, typ string) {
	t.Helper()
	eventually(t, stepTimeout, name+": no "+typ+" condition", func() (bool, string) {
		s, r, m := condition(c.getJSON(t, "collabcluster", name, "-n", appNS), typ)
		return s == "", fmt.Sprintf("%s=%s (%s: %s)", typ, s, r, m)
	})
}

// routeStatus is status.parents of an HTTPRoute with one Gateway's answer
// for the sample's parentRef (public in gateway-system, listener https).
func routeStatus(generation int64, accepted, reason, message string) map[string]any {
	now := time.Now().UTC().Format(time.RFC3339)
	return map[string]any{"parents": []any{map[string]any{
		"parentRef":      map[string]any{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public", "namespace": "gateway-system", "sectionName": "https"},
		"controllerName": "gateway.example.test/e2e",
		"conditions": []any{
			map[string]any{"type": "Accepted", "status": accepted, "reason": reason, "message": message, "observedGeneration": generation, "lastTransitionTime": now},
			map[string]any{"type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs", "message": "backend resolved", "observedGeneration": generation, "lastTransitionTime": now},
		},
	}}}
}

// engineSteps runs CollabClusters on CloudNativePG and the Gateway API on
// the kwok control plane, with the operator under the chart's RBAC: refused
// while the CRDs are missing, then HTTPRoute and CloudNativePG Cluster
// created, their status (written here, as no Gateway implementation or
// CloudNativePG operator runs) reflected in the conditions, updates
// followed, and the children garbage-collected with the CollabClusters.
func engineSteps(t *testing.T, c *cluster, op *operator, step func(string, func(*testing.T))) {
	root := c.root
	engines := loadSample(t, root, enginesSample)
	// One cluster per engine, so each refusal is seen on its own: the
	// gateway one keeps the operator's PostgreSQL, the CloudNativePG one
	// is exposed by its Service only.
	gw := engines.renamed(t, "eng-gw", func(spec map[string]any) {
		spec["runtime"] = map[string]any{"replicas": 2}
		spec["postgres"] = map[string]any{"managed": map[string]any{"storage": map[string]any{"size": "1Gi"}}}
	})
	pg := engines.renamed(t, "eng-pg", func(spec map[string]any) {
		spec["runtime"] = map[string]any{"replicas": 2}
		delete(spec, "gateway")
	})
	const (
		routeCRD = "httproutes.gateway.networking.k8s.io"
		cnpgCRD  = "clusters.postgresql.cnpg.io"
		cnpgName = "eng-pg-postgres"
	)

	step("engines without their CRDs are refused with a clear condition", func(t *testing.T) {
		for _, s := range []sample{gw, pg} {
			c.kApply(t, appNS, s.yaml(t))
		}
		msg := c.waitCondition(t, op, gw.name, "Degraded", "True", "GatewayAPINotInstalled")
		if !strings.Contains(msg, routeCRD) || !strings.Contains(msg, "spec.ingress") {
			t.Errorf("Degraded message does not name the CRD and the alternative: %s", msg)
		}
		msg = c.waitCondition(t, op, pg.name, "Degraded", "True", "CloudNativePGNotInstalled")
		if !strings.Contains(msg, cnpgCRD) || !strings.Contains(msg, "CloudNativePG operator") {
			t.Errorf("Degraded message does not name the CRD and what to install: %s", msg)
		}
		c.waitCondition(t, op, pg.name, "PostgresReady", "False", "CloudNativePGNotInstalled")
		for _, s := range []sample{gw, pg} {
			if st, _, m := condition(c.getJSON(t, "collabcluster", s.name, "-n", appNS), "Ready"); st == "True" {
				t.Errorf("%s Ready while refused: %s", s.name, m)
			}
		}
	})

	var gwUID, pgUID string
	step("Gateway API standard channel: HTTPRoute, RouteAccepted from the Gateway's status", func(t *testing.T) {
		c.installCRDs(t, root, "gateway-api-standard", routeCRD)
		c.waitCondition(t, op, gw.name, "Degraded", "False", "AsExpected")
		msg := c.waitCondition(t, op, gw.name, "SessionAffinity", "False", "HTTPRouteSessionPersistenceUnavailable")
		if !strings.Contains(msg, "experimental") {
			t.Errorf("SessionAffinity does not say where sessionPersistence is: %s", msg)
		}
		gwUID = str(c.getJSON(t, "collabcluster", gw.name, "-n", appNS), "metadata", "uid")
		route := c.getJSON(t, "httproute", gw.name, "-n", appNS)
		if !ownedBy(route, gwUID) {
			t.Errorf("HTTPRoute not owned by %s: %v", gw.name, field(route, "metadata", "ownerReferences"))
		}
		rules, _ := field(route, "spec", "rules").([]any)
		if len(rules) != 1 {
			t.Fatalf("HTTPRoute rules %v, want one", rules)
		}
		if got := str(rules[0], "timeouts", "request"); got != "1h" {
			t.Errorf("request timeout %q, want 1h", got)
		}
		if field(rules[0], "sessionPersistence") != nil {
			t.Errorf("sessionPersistence written on the standard channel's HTTPRoute")
		}
		if fmt.Sprint(field(route, "spec", "hostnames")) != "[docs.example.test]" {
			t.Errorf("hostnames %v", field(route, "spec", "hostnames"))
		}
		backends, _ := field(rules[0], "backendRefs").([]any)
		if len(backends) != 1 || str(backends[0], "name") != gw.name {
			t.Errorf("backendRefs %v, want the runtime Service %s", backends, gw.name)
		}

		msg = c.waitCondition(t, op, gw.name, "RouteAccepted", "Unknown", "Pending")
		if !strings.Contains(msg, "gateway-system/public") {
			t.Errorf("RouteAccepted does not name the Gateway waited for: %s", msg)
		}
		gen := num(route, "metadata", "generation")
		c.patchStatus(t, "httproute", appNS, gw.name, routeStatus(gen, "False", "NotAllowedByListeners", "no listener of gateway-system/public allows routes from namespace "+appNS))
		msg = c.waitCondition(t, op, gw.name, "RouteAccepted", "False", "NotAccepted")
		if !strings.Contains(msg, "NotAllowedByListeners") || !strings.Contains(msg, "gateway.example.test/e2e") {
			t.Errorf("RouteAccepted does not carry the Gateway's answer: %s", msg)
		}
		c.patchStatus(t, "httproute", appNS, gw.name, routeStatus(gen, "True", "Accepted", "route accepted"))
		c.waitCondition(t, op, gw.name, "RouteAccepted", "True", "Accepted")
		if _, err := c.kubectl(t.Context(), "wait", "--for=condition=Ready", "collabcluster/"+gw.name, "-n", appNS, "--timeout="+readyTimeout.String()); err != nil {
			t.Fatalf("%v\n%s", err, c.k(t, "get", "collabcluster", gw.name, "-n", appNS, "-o", "yaml"))
		}
	})

	step("Gateway API experimental channel: cookie sessionPersistence; spec updates reach the HTTPRoute", func(t *testing.T) {
		c.installCRDs(t, root, "gateway-api-experimental", routeCRD)
		c.waitCondition(t, op, gw.name, "SessionAffinity", "True", "HTTPRouteSessionPersistence")
		eventually(t, stepTimeout, "sessionPersistence on the HTTPRoute", func() (bool, string) {
			rules, _ := field(c.getJSON(t, "httproute", gw.name, "-n", appNS), "spec", "rules").([]any)
			sp := field(rules[0], "sessionPersistence")
			return str(sp, "type") == "Cookie" && str(sp, "sessionName") == "tandem-affinity", fmt.Sprint(sp)
		})
		c.k(t, "patch", "collabcluster", gw.name, "-n", appNS, "--type=merge", "-p",
			`{"spec":{"gateway":{"hostnames":["docs.example.test","edit.example.test"],"requestTimeoutSeconds":7200}}}`)
		eventually(t, stepTimeout, "the HTTPRoute to follow the new host names and timeout", func() (bool, string) {
			route := c.getJSON(t, "httproute", gw.name, "-n", appNS)
			rules, _ := field(route, "spec", "rules").([]any)
			hosts := fmt.Sprint(field(route, "spec", "hostnames"))
			timeout := str(rules[0], "timeouts", "request")
			return hosts == "[docs.example.test edit.example.test]" && timeout == "2h", fmt.Sprintf("hostnames %s, timeout %s", hosts, timeout)
		})
		// The spec changed, so the Gateway's answer is for an older
		// generation until it answers again.
		c.waitCondition(t, op, gw.name, "RouteAccepted", "Unknown", "Pending")
		gen := num(c.getJSON(t, "httproute", gw.name, "-n", appNS), "metadata", "generation")
		c.patchStatus(t, "httproute", appNS, gw.name, routeStatus(gen, "True", "Accepted", "route accepted"))
		c.waitCondition(t, op, gw.name, "RouteAccepted", "True", "Accepted")
	})

	step("removing spec.gateway deletes the HTTPRoute; adding it back recreates it", func(t *testing.T) {
		uid := str(c.getJSON(t, "httproute", gw.name, "-n", appNS), "metadata", "uid")
		c.k(t, "patch", "collabcluster", gw.name, "-n", appNS, "--type=json", "-p", `[{"op":"remove","path":"/spec/gateway"}]`)
		eventually(t, stepTimeout, "the HTTPRoute to be deleted by the operator", func() (bool, string) {
			_, ok := c.tryGetJSON(t, "httproute", gw.name, "-n", appNS)
			return !ok, "still there"
		})
		c.noCondition(t, gw.name, "RouteAccepted")
		c.noCondition(t, gw.name, "SessionAffinity")
		c.kApply(t, appNS, gw.yaml(t))
		eventually(t, stepTimeout, "the HTTPRoute to come back", func() (bool, string) {
			r, ok := c.tryGetJSON(t, "httproute", gw.name, "-n", appNS)
			return ok && str(r, "metadata", "uid") != uid, "absent or the old one"
		})
	})

	step("CloudNativePG: Cluster from the spec, readiness from its simulated status, the -app Secret", func(t *testing.T) {
		c.installCRDs(t, root, "cloudnative-pg", cnpgCRD)
		c.waitCondition(t, op, pg.name, "Degraded", "False", "AsExpected")
		msg := c.waitCondition(t, op, pg.name, "PostgresReady", "False", "ClusterNotReady")
		if !strings.Contains(msg, cnpgName) {
			t.Errorf("PostgresReady does not name the Cluster: %s", msg)
		}
		pgUID = str(c.getJSON(t, "collabcluster", pg.name, "-n", appNS), "metadata", "uid")
		cl := c.getJSON(t, "clusters.postgresql.cnpg.io", cnpgName, "-n", appNS)
		if !ownedBy(cl, pgUID) {
			t.Errorf("CloudNativePG Cluster not owned by %s", pg.name)
		}
		if num(cl, "spec", "instances") != 3 || str(cl, "spec", "storage", "size") != "10Gi" {
			t.Errorf("Cluster spec instances %d storage %q, want 3 and 10Gi", num(cl, "spec", "instances"), str(cl, "spec", "storage", "size"))
		}
		if got := str(cl, "spec", "resources", "requests", "memory"); got != "512Mi" {
			t.Errorf("Cluster resources.requests.memory %q, want 512Mi", got)
		}
		// No PostgreSQL of the operator's own besides it.
		for _, s := range c.owned(t, "statefulsets", appNS, pgUID) {
			if strings.Contains(str(s, "metadata", "name"), "postgres") {
				t.Errorf("managed PostgreSQL StatefulSet %s next to CloudNativePG", str(s, "metadata", "name"))
			}
		}

		now := time.Now().UTC().Format(time.RFC3339)
		c.patchStatus(t, "clusters.postgresql.cnpg.io", appNS, cnpgName, map[string]any{
			"instances": 3, "readyInstances": 3, "phase": "Cluster in healthy state",
			"conditions": []any{map[string]any{"type": "Ready", "status": "True", "reason": "ClusterIsReady", "message": "Cluster is Ready", "lastTransitionTime": now}},
		})
		c.waitCondition(t, op, pg.name, "PostgresReady", "False", "AppSecretMissing")
		// The Secret CloudNativePG generates for the application owner.
		c.kApply(t, appNS, `apiVersion: v1
kind: Secret
metadata:
  name: eng-pg-postgres-app
stringData:
  uri: postgresql://tandem:pw@eng-pg-postgres-rw.`+appNS+`:5432/tandem
`)
		msg = c.waitCondition(t, op, pg.name, "PostgresReady", "True", "CloudNativePGClusterReady")
		if !strings.Contains(msg, "eng-pg-postgres-rw") || !strings.Contains(msg, "3/3") {
			t.Errorf("PostgresReady message: %s", msg)
		}
		deps := c.owned(t, "deployments", appNS, pgUID)
		if len(deps) != 1 {
			t.Fatalf("runtime Deployments %v", names(deps))
		}
		if secrets := podTemplateSecrets(deps[0]); !strings.Contains(fmt.Sprint(secrets), "eng-pg-postgres-app") {
			t.Errorf("runtime pods use Secrets %v, not eng-pg-postgres-app", secrets)
		}
		if _, err := c.kubectl(t.Context(), "wait", "--for=condition=Ready", "collabcluster/"+pg.name, "-n", appNS, "--timeout="+readyTimeout.String()); err != nil {
			t.Fatalf("%v\n%s", err, c.k(t, "get", "collabcluster", pg.name, "-n", appNS, "-o", "yaml"))
		}

		// A failover in CloudNativePG shows up in PostgresReady and Ready.
		c.patchStatus(t, "clusters.postgresql.cnpg.io", appNS, cnpgName, map[string]any{
			"readyInstances": 2, "phase": "Failing over",
			"conditions": []any{map[string]any{"type": "Ready", "status": "False", "reason": "ClusterIsNotReady", "message": "Cluster Is Not Ready", "lastTransitionTime": time.Now().UTC().Format(time.RFC3339)}},
		})
		msg = c.waitCondition(t, op, pg.name, "PostgresReady", "False", "ClusterNotReady")
		if !strings.Contains(msg, "Failing over") || !strings.Contains(msg, "2/3") {
			t.Errorf("PostgresReady message: %s", msg)
		}
		c.waitCondition(t, op, pg.name, "Ready", "False", "ComponentsNotReady")

		// Spec updates reach the Cluster.
		c.k(t, "patch", "collabcluster", pg.name, "-n", appNS, "--type=merge", "-p", `{"spec":{"postgres":{"cloudNativePG":{"instances":2}}}}`)
		eventually(t, stepTimeout, "the Cluster to follow spec.postgres.cloudNativePG.instances", func() (bool, string) {
			n := num(c.getJSON(t, "clusters.postgresql.cnpg.io", cnpgName, "-n", appNS), "spec", "instances")
			return n == 2, fmt.Sprintf("instances %d", n)
		})
		c.patchStatus(t, "clusters.postgresql.cnpg.io", appNS, cnpgName, map[string]any{
			"instances": 2, "readyInstances": 2, "phase": "Cluster in healthy state",
			"conditions": []any{map[string]any{"type": "Ready", "status": "True", "reason": "ClusterIsReady", "message": "Cluster is Ready", "lastTransitionTime": time.Now().UTC().Format(time.RFC3339)}},
		})
		c.waitCondition(t, op, pg.name, "PostgresReady", "True", "CloudNativePGClusterReady")
	})

	step("deleting the engine CollabClusters garbage-collects the HTTPRoute and the CloudNativePG Cluster", func(t *testing.T) {
		for _, s := range []sample{gw, pg} {
			c.k(t, "delete", "collabcluster", s.name, "-n", appNS, "--wait=true", "--timeout=1m")
		}
		eventually(t, stepTimeout, "the engine children to be garbage-collected", func() (bool, string) {
			var left []string
			for _, kind := range []string{"httproutes", "clusters.postgresql.cnpg.io", "deployments", "services"} {
				for _, uid := range []string{gwUID, pgUID} {
					for _, n := range names(c.owned(t, kind, appNS, uid)) {
						left = append(left, kind+"/"+n)
					}
				}
			}
			return len(left) == 0, fmt.Sprintf("left: %v", left)
		})
	})
}
