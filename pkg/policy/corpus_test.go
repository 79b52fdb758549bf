package policy_test

import (
	"encoding/json"
	"os"
	"slices"
	"testing"

	"github.com/imagegate/imagegate/pkg/policy"
)

// Corpus is the hostile-reference corpus in testdata/corpus.json; see the
// README beside it. It is exported through this test helper so the server and
// CLI tests judge the very same cases.
type Corpus struct {
	Description string     `json:"description"`
	Policy      CorpusOpts `json:"policy"`
	Cases       []Case     `json:"cases"`
}

// CorpusOpts is the policy every corpus case is judged under.
type CorpusOpts struct {
	AllowedRegistries []string `json:"registryWhitelist"`
	RejectLatest      bool     `json:"rejectLatest"`
	AllowBreakGlass   bool     `json:"allowBreakGlass"`
}

// Case is one corpus entry.
type Case struct {
	Name        string            `json:"name"`
	Image       string            `json:"image"`
	Annotations map[string]string `json:"annotations"`
	Want        string            `json:"want"`
	Rules       []policy.Check    `json:"rules"`
	Why         string            `json:"why"`
	Source      string            `json:"source"`
}

func loadCorpus(t testing.TB) (*policy.Policy, Corpus) {
	t.Helper()
	raw, err := os.ReadFile("testdata/corpus.json")
	if err != nil {
		t.Fatal(err)
	}
	var c Corpus
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatalf("decode corpus: %v", err)
	}
	p, err := policy.New(policy.Options{
		AllowedRegistries: c.Policy.AllowedRegistries,
		RejectLatest:      c.Policy.RejectLatest,
		AllowBreakGlass:   c.Policy.AllowBreakGlass,
	})
	if err != nil {
		t.Fatalf("corpus policy: %v", err)
	}
	return p, c
}

func TestCorpus(t *testing.T) {
	t.Parallel()
	p, corpus := loadCorpus(t)
	if len(corpus.Cases) < 50 {
		t.Fatalf("corpus has %d cases, want the full hostile set", len(corpus.Cases))
	}
	for _, tc := range corpus.Cases {
		t.Run(tc.Name, func(t *testing.T) {
			t.Parallel()
			d := p.Evaluate(policy.Input{
				Namespace:   "default",
				Images:      []policy.Image{{Ref: tc.Image}},
				Annotations: tc.Annotations,
			})
			if got, want := d.Allowed, tc.Want == "allow"; got != want {
				t.Errorf("Evaluate(%q).Allowed = %v, want %v (%s); reason: %s", tc.Image, got, want, tc.Why, d.Reason())
			}
			var rules []policy.Check
			for _, v := range d.Violations {
				rules = append(rules, v.Check)
			}
			if !slices.Equal(rules, tc.Rules) {
				t.Errorf("Evaluate(%q) rules = %v, want %v", tc.Image, rules, tc.Rules)
			}
			if !d.Allowed && d.Reason() == "" {
				t.Errorf("Evaluate(%q) denied without a reason", tc.Image)
			}
		})
	}
}
