package applied

import (
	"encoding/json"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

	"github.com/tandem-dev/tandem/internal/specs"
)

func deployment() *appsv1.Deployment {
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: "notes-runtime", Namespace: "ns", Labels: map[string]string{"a": "b"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"a": "b"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"a": "b"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "runtime", Image: "tandem:1",
					Env: []corev1.EnvVar{{Name: "A", Value: "1"}, {Name: "B", Value: "2"}},
				}}},
			},
		},
	}
}

// live is what the apiserver would return after applying body: the body
// plus defaults and status, through a JSON round trip as the cache would
// hold an unstructured object (numbers as int64).
func live(t *testing.T, body map[string]any, edit func(*appsv1.Deployment)) map[string]any {
	t.Helper()
	d := &appsv1.Deployment{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(body, d); err != nil {
		t.Fatal(err)
	}
	d.TypeMeta = metav1.TypeMeta{} // typed objects from the cache may have none
	d.UID, d.ResourceVersion, d.Generation = "uid-1", "42", 3
	d.Spec.Template.Spec.Containers[0].TerminationMessagePath = "/dev/termination-log"
	d.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyAlways
	d.Status.Replicas, d.Status.ReadyReplicas = 2, 2
	d.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: specs.FieldManager}}
	if edit != nil {
		edit(d)
	}
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(d)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestBodyIsStableAndHashed(t *testing.T) {
	a, err := Body(deployment())
	if err != nil {
		t.Fatal(err)
	}
	b, err := Body(deployment())
	if err != nil {
		t.Fatal(err)
	}
	ha, _, _ := unstructured.NestedString(a, "metadata", "annotations", specs.AnnotationAppliedHash)
	hb, _, _ := unstructured.NestedString(b, "metadata", "annotations", specs.AnnotationAppliedHash)
	if ha == "" || ha != hb {
		t.Fatalf("hashes %q and %q, want equal and set", ha, hb)
	}
	if _, ok := a["status"]; ok {
		t.Error("body has a status")
	}
	if _, ok, _ := unstructured.NestedFieldNoCopy(a, "metadata", "creationTimestamp"); ok {
		t.Error("body has creationTimestamp: null")
	}
	other := deployment()
	other.Spec.Template.Spec.Containers[0].Env = other.Spec.Template.Spec.Containers[0].Env[:1]
	c, err := Body(other)
	if err != nil {
		t.Fatal(err)
	}
	if hc, _, _ := unstructured.NestedString(c, "metadata", "annotations", specs.AnnotationAppliedHash); hc == ha {
		t.Errorf("removing an env var kept the hash %s", hc)
	}
}

func TestUpToDate(t *testing.T) {
	body, err := Body(deployment())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		edit func(*appsv1.Deployment)
		want bool
	}{
		{"as applied, plus defaults and status", nil, true},
		{"another manager's label", func(d *appsv1.Deployment) { d.Labels["team"] = "x" }, true},
		{"another manager's annotation on the pod template", func(d *appsv1.Deployment) {
			d.Spec.Template.Annotations = map[string]string{"kubectl.kubernetes.io/restartedAt": "now"}
		}, true},
		{"no hash: applied by an older operator", func(d *appsv1.Deployment) {
			delete(d.Annotations, specs.AnnotationAppliedHash)
		}, false},
		{"hash of another body", func(d *appsv1.Deployment) {
			d.Annotations[specs.AnnotationAppliedHash] = "0000000000000000"
		}, false},
		{"owned image edited", func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "evil" }, false},
		{"owned replicas edited", func(d *appsv1.Deployment) { d.Spec.Replicas = ptr.To[int32](7) }, false},
		{"owned label removed", func(d *appsv1.Deployment) { delete(d.Labels, "a") }, false},
		{"owned env var removed", func(d *appsv1.Deployment) {
			d.Spec.Template.Spec.Containers[0].Env = d.Spec.Template.Spec.Containers[0].Env[:1]
		}, false},
		{"env var added by hand", func(d *appsv1.Deployment) {
			c := &d.Spec.Template.Spec.Containers[0]
			c.Env = append(c.Env, corev1.EnvVar{Name: "C", Value: "3"})
		}, false},
		{"sidecar injected", func(d *appsv1.Deployment) {
			d.Spec.Template.Spec.Containers = append(d.Spec.Template.Spec.Containers, corev1.Container{Name: "proxy"})
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Difference(body, live(t, body, tc.edit)) == ""; got != tc.want {
				t.Errorf("up to date = %v, want %v (Difference %q)", got, tc.want, Difference(body, live(t, body, tc.edit)))
			}
		})
	}
}

func TestCovers(t *testing.T) {
	decode := func(s string) any {
		var v any
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		name       string
		want, have any
		covered    bool
	}{
		{"int64 and float64", int64(3), 3.0, true},
		{"different numbers", int64(3), int64(4), false},
		{"number and string", int64(3), "3", false},
		{"string", "a", "a", true},
		{"bool", true, false, false},
		{"empty map absent", map[string]any{}, nil, true},
		{"empty list absent", []any{}, nil, true},
		{"missing scalar", decode(`{"a":1}`), decode(`{}`), false},
		{"extra keys in have", decode(`{"a":1}`), decode(`{"a":1,"b":2}`), true},
		{"list items are maps with defaults", decode(`[{"n":"x"}]`), decode(`[{"n":"x","d":1}]`), true},
		{"list longer in have", decode(`[1]`), decode(`[1,2]`), false},
		{"list reordered", decode(`[1,2]`), decode(`[2,1]`), false},
		{"map where have has a scalar", decode(`{"a":{}}`), decode(`{"a":"x"}`), false},
		{"nested difference", decode(`{"a":{"b":[{"c":"x"}]}}`), decode(`{"a":{"b":[{"c":"y"}]}}`), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := covers(tc.want, tc.have); got != tc.covered {
				t.Errorf("covers(%v, %v) = %v, want %v", tc.want, tc.have, got, tc.covered)
			}
		})
	}
}

func TestDifferenceNamesTheField(t *testing.T) {
	body, err := Body(deployment())
	if err != nil {
		t.Fatal(err)
	}
	got := Difference(body, live(t, body, func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "evil" }))
	if want := "spec.template.spec.containers.0.image"; got != want {
		t.Errorf("Difference = %q, want %q", got, want)
	}
}

func TestTypeMetaOfEmbeddedObjects(t *testing.T) {
	want := map[string]any{"spec": map[string]any{"templates": []any{
		map[string]any{"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": map[string]any{"name": "data"}},
	}}}
	without := map[string]any{"spec": map[string]any{"templates": []any{
		map[string]any{"metadata": map[string]any{"name": "data"}},
	}}}
	other := map[string]any{"spec": map[string]any{"templates": []any{
		map[string]any{"apiVersion": "v2", "metadata": map[string]any{"name": "data"}},
	}}}
	if !covers(want, without) {
		t.Error("absent apiVersion and kind of an embedded object are a difference")
	}
	if covers(want, other) {
		t.Error("a different apiVersion is no difference")
	}
}
