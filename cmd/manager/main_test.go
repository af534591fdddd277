package main

import (
	"slices"
	"testing"
)

func TestSplitNamespaces(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"team-a", []string{"team-a"}},
		{"team-a,team-b", []string{"team-a", "team-b"}},
		{" team-a , ,team-b, ", []string{"team-a", "team-b"}},
	}
	for _, tc := range tests {
		if got := splitNamespaces(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("splitNamespaces(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
