package engines_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	collabv1 "github.com/tandem-dev/tandem/api/v1alpha1"
	"github.com/tandem-dev/tandem/controllers"
	"github.com/tandem-dev/tandem/internal/specs"
)

// TestNamespacedInstall runs the operator as the chart's watchNamespaces
// install does: its client impersonates a ServiceAccount bound, in the
// watched namespace only, to a Role with the operator's generated rules
// (config/rbac/role.yaml, which the chart copies), so it may read neither
// CRDs nor IngressClasses. It runs on a control plane of its own: the
// package's operator watches every namespace and would reconcile the same
// CollabClusters with its cluster-wide rights.
//
// The Gateway API's experimental HTTPRoute CRD is installed, with
// sessionPersistence: the operator cannot read that schema, so it writes
// no sessionPersistence and says why. An IngressClass of Traefik exists:
// the operator cannot read it, so auto falls back to ingress-nginx and
// says why, while an explicit controller needs no IngressClass.
func TestNamespacedInstall(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := collabv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	env := &envtest.Environment{
		CRDInstallOptions: envtest.CRDInstallOptions{
			Paths: []string{
				filepath.Join("..", "..", "config", "crd", "bases"),
				crdFile(t, "gateway-api-experimental", "gateway.networking.k8s.io_httproutes.yaml"),
			},
			ErrorIfPathMissing: true,
		},
		Scheme: scheme,
	}
	adminCfg, err := env.Start()
	if err != nil {
		t.Fatalf("start a second envtest control plane: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	admin, err := client.New(adminCfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	// The chart's objects for watchNamespaces: [ns]: the ServiceAccount in
	// the release namespace, a Role and RoleBinding in ns.
	const opNS, sa = "tandem-system", "tandem-operator"
	ns := "docs"
	for _, n := range []string{opNS, ns} {
		if err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := admin.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: opNS, Name: sa}}); err != nil {
		t.Fatal(err)
	}
	roleYAML, err := os.ReadFile(filepath.Join("..", "..", "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	generated := &rbacv1.ClusterRole{}
	if err := yaml.Unmarshal(roleYAML, generated); err != nil {
		t.Fatalf("config/rbac/role.yaml: %v", err)
	}
	if err := admin.Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tandem-manager-role"},
		Rules: generated.Rules}); err != nil {
		t.Fatal(err)
	}
	if err := admin.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tandem-manager-rolebinding"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "tandem-manager-role"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: opNS, Name: sa}},
	}); err != nil {
		t.Fatal(err)
	}
	if err := admin.Create(ctx, &networkingv1.IngressClass{ObjectMeta: metav1.ObjectMeta{Name: "traefik"},
		Spec: networkingv1.IngressClassSpec{Controller: "traefik.io/ingress-controller"}}); err != nil {
		t.Fatal(err)
	}

	opCfg := rest.CopyConfig(adminCfg)
	opCfg.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + opNS + ":" + sa,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + opNS, "system:authenticated"},
	}
	// The control plane enforces RBAC for the impersonated account: what
	// follows depends on it.
	op, err := client.New(opCfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	if err := op.List(ctx, &networkingv1.IngressClassList{}); !apierrors.IsForbidden(err) {
		t.Fatalf("the operator's account listing IngressClasses: %v, want Forbidden", err)
	}
	if err := op.List(ctx, &collabv1.CollabClusterList{}, client.InNamespace(ns)); err != nil {
		t.Fatalf("the operator's account listing CollabClusters in %s: %v", ns, err)
	}

	mgr, err := ctrl.NewManager(opCfg, ctrl.Options{
		Scheme:                 scheme,
		Cache:                  controllers.CacheOptions([]string{ns}),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &controllers.CollabClusterReconciler{
		Client:        mgr.GetClient(),
		APIReader:     mgr.GetAPIReader(),
		Recorder:      mgr.GetEventRecorder("tandem-operator"),
		OperatorImage: "registry.example.test/tandem:engines",
		Namespaces:    []string{ns},
	}
	if err := r.SetupWithManager(ctx, mgr); err != nil {
		t.Fatalf("set up the controller under a namespaced Role: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})

	condition := func(t *testing.T, name, condType string, status metav1.ConditionStatus, reason string) *metav1.Condition {
		t.Helper()
		var got *metav1.Condition
		eventually(t, fmt.Sprintf("%s %s=%s/%s", name, condType, status, reason), func(ctx context.Context) error {
			cc := &collabv1.CollabCluster{}
			if err := admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, cc); err != nil {
				return err
			}
			c := meta.FindStatusCondition(cc.Status.Conditions, condType)
			if c == nil {
				return fmt.Errorf("no %s condition yet; conditions: %v", condType, cc.Status.Conditions)
			}
			if c.Status != status || c.Reason != reason {
				return fmt.Errorf("%s is %s/%s: %s", condType, c.Status, c.Reason, c.Message)
			}
			got = c
			return nil
		})
		return got
	}
	createIn := func(t *testing.T, name string, mutate func(*collabv1.CollabCluster)) {
		t.Helper()
		if err := admin.Create(ctx, collab(ns, name, mutate)); err != nil {
			t.Fatalf("create CollabCluster %s: %v", name, err)
		}
	}

	t.Run("gateway: a route without sessionPersistence, and why", func(t *testing.T) {
		createIn(t, "gw", withGateway)
		c := condition(t, "gw", collabv1.ConditionSessionAffinity, metav1.ConditionFalse, "HTTPRouteSchemaUnreadable")
		if !strings.Contains(c.Message, "CustomResourceDefinition") {
			t.Errorf("SessionAffinity message does not say what could not be read: %s", c.Message)
		}
		eventually(t, "HTTPRoute gw with timeouts and no sessionPersistence", func(ctx context.Context) error {
			route, err := getWith(ctx, admin, httpRoute(), ns, "gw")
			if err != nil {
				return err
			}
			rules, _, _ := unstructured.NestedSlice(route.Object, "spec", "rules")
			if len(rules) != 1 {
				return fmt.Errorf("rules %v", rules)
			}
			rule := rules[0].(map[string]any)
			if _, has := rule["sessionPersistence"]; has {
				return fmt.Errorf("sessionPersistence written without reading the CRD: %v", rule)
			}
			if _, has := rule["timeouts"]; !has {
				return fmt.Errorf("no timeouts on the rule: %v", rule)
			}
			return nil
		})
	})

	t.Run("ingress, controller auto: ingress-nginx's annotations, and why", func(t *testing.T) {
		createIn(t, "auto", func(cc *collabv1.CollabCluster) {
			cc.Spec.Ingress = collabv1.IngressSpec{Enabled: true, Host: "docs.example.test", ClassName: ptr.To("traefik")}
		})
		c := condition(t, "auto", collabv1.ConditionSessionAffinity, metav1.ConditionFalse, "UnknownIngressController")
		if !strings.Contains(c.Message, "the operator may not read IngressClasses") || !strings.Contains(c.Message, "set spec.ingress.controller") {
			t.Errorf("SessionAffinity message: %s", c.Message)
		}
		eventually(t, "ingress-nginx annotations on Ingress auto", func(ctx context.Context) error {
			ing := &networkingv1.Ingress{}
			if err := admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: "auto"}, ing); err != nil {
				return err
			}
			if ing.Annotations["nginx.ingress.kubernetes.io/affinity"] != "cookie" {
				return fmt.Errorf("annotations %v", ing.Annotations)
			}
			return nil
		})
	})

	t.Run("ingress, explicit controller: needs no IngressClass", func(t *testing.T) {
		createIn(t, "explicit", func(cc *collabv1.CollabCluster) {
			cc.Spec.Ingress = collabv1.IngressSpec{Enabled: true, Host: "docs.example.test", ClassName: ptr.To("traefik"),
				Controller: collabv1.IngressControllerTraefik}
		})
		condition(t, "explicit", collabv1.ConditionSessionAffinity, metav1.ConditionTrue, "CookieAffinity")
		eventually(t, "Traefik's annotations on Service explicit", func(ctx context.Context) error {
			svc := &corev1.Service{}
			if err := admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: "explicit"}, svc); err != nil {
				return err
			}
			if svc.Annotations["traefik.ingress.kubernetes.io/service.sticky.cookie.name"] != specs.DefaultCookieName {
				return fmt.Errorf("annotations %v", svc.Annotations)
			}
			return nil
		})
	})

	t.Run("CloudNativePG without its CRDs: refused, learned from discovery", func(t *testing.T) {
		createIn(t, "pg", withCNPG)
		c := condition(t, "pg", collabv1.ConditionDegraded, metav1.ConditionTrue, "CloudNativePGNotInstalled")
		if !strings.Contains(c.Message, "postgresql.cnpg.io") {
			t.Errorf("Degraded message does not name the CRD: %s", c.Message)
		}
	})

	// Nothing the operator did needed more than the namespaced Role: no
	// CollabCluster it reconciles says it was forbidden something.
	list := &collabv1.CollabClusterList{}
	if err := admin.List(ctx, list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, cc := range list.Items {
		for _, c := range cc.Status.Conditions {
			if strings.Contains(strings.ToLower(c.Message), "forbidden") {
				t.Errorf("CollabCluster %s condition %s: %s", cc.Name, c.Type, c.Message)
			}
		}
	}
}

// getWith reads an object of gvkObj's kind with client c.
func getWith(ctx context.Context, c client.Client, gvkObj *unstructured.Unstructured, ns, name string) (*unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvkObj.GroupVersionKind())
	return u, c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, u)
}
