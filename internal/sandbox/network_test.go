package sandbox

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestNetworkJSON(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Network
		out  string
	}{
		{`"none"`, Network{Mode: NetworkNone}, `"none"`},
		{`"full"`, Network{Mode: NetworkFull}, `"full"`},
		{`{"allow":["api.github.com","10.0.0.0/8:5432"]}`, Network{Mode: NetworkAllow, Allow: []string{"api.github.com", "10.0.0.0/8:5432"}}, `{"allow":["api.github.com","10.0.0.0/8:5432"]}`},
		{`{"allow":[]}`, Network{Mode: NetworkAllow, Allow: []string{}}, `{"allow":[]}`},
		{`null`, Network{}, `""`},
	} {
		var got Network
		if err := json.Unmarshal([]byte(tc.in), &got); err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%s: (-want +got)\n%s", tc.in, diff)
		}
		b, err := json.Marshal(got)
		if err != nil || string(b) != tc.out {
			t.Errorf("%s: marshal got %s, %v, want %s", tc.in, b, err, tc.out)
		}
	}
	for _, bad := range []string{`{"deny":[]}`, `{}`, `{"allow":"x"}`, `{"allow":[1]}`, `[]`, `3`} {
		var n Network
		if err := json.Unmarshal([]byte(bad), &n); err == nil {
			t.Errorf("%s: accepted as %+v", bad, n)
		}
	}
	// In a Spec, an absent network stays absent.
	b, _ := json.Marshal(Spec{ImageBase: "host"})
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	if _, ok := m["network"]; ok {
		t.Errorf("absent network marshalled: %s", b)
	}
}

func FuzzNetworkJSON(f *testing.F) {
	for _, s := range []string{`"none"`, `"full"`, `{"allow":["a.b"]}`, `{"allow":null}`, `{"allow":["x"],"y":1}`, `nul`, `{`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var n Network
		if err := json.Unmarshal([]byte(s), &n); err != nil {
			return
		}
		b, err := json.Marshal(n)
		if err != nil {
			t.Fatalf("%q decoded to %+v, which does not encode: %v", s, n, err)
		}
		var again Network
		if err := json.Unmarshal(b, &again); err != nil || again.Mode != n.Mode || len(again.Allow) != len(n.Allow) {
			t.Fatalf("%q: round trip %s gave %+v, %v", s, b, again, err)
		}
	})
}
