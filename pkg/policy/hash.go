package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strconv"
	"strings"
)

// Hash identifies the policy's rules: two policies with the same hash decide
// every input alike, with the same messages. It is the hash that decision
// logs, the imagegate_policy_info metric and, for a policy file, the
// policy-hash audit annotation carry, so an operator can tell which policy a
// replica applied. Every field that changes a decision or a message must be
// part of it (TestHashCoversEveryRuleField edits each one). It is computed
// once, when the policy is compiled.
func (p *Policy) Hash() string { return p.hash }

// computeHash renders the compiled rules canonically (entries normalised,
// duplicates dropped, in the order that breaks ties) and hashes them, so
// "Registry.My.Com" and "registry.my.com", or a comment in a policy file,
// do not change the hash.
func (p *Policy) computeHash(rules []*rule) string {
	var b strings.Builder
	for _, r := range rules {
		b.WriteString("rule=")
		b.WriteString(r.name)
		for _, ns := range r.patterns {
			b.WriteString("\nnamespace=")
			b.WriteString(ns)
		}
		b.WriteString("\nmode=")
		b.WriteString(string(r.mode))
		b.WriteString("\nreject-latest=")
		b.WriteString(strconv.FormatBool(r.rejectLatest))
		b.WriteString("\nrequire-digest=")
		b.WriteString(strconv.FormatBool(r.requireDigest))
		if r.requireFQ { // only when set, so hashes from before it stay the same
			b.WriteString("\nrequire-fully-qualified=true")
		}
		if r.pinDigests { // only when set, as above
			b.WriteString("\npin-digests=true")
		}
		bg := r.breakGlass
		b.WriteString("\nallow-break-glass=")
		b.WriteString(strconv.FormatBool(bg.Enabled))
		if bg.Enabled {
			b.WriteString("\nbreak-glass-ticket=")
			b.WriteString(strconv.FormatBool(bg.RequireTicket))
			b.WriteString("\nbreak-glass-users=")
			b.WriteString(strings.Join(bg.AllowedUsers, ","))
			b.WriteString("\nbreak-glass-groups=")
			b.WriteString(strings.Join(bg.AllowedGroups, ","))
			b.WriteString("\nbreak-glass-max-age=")
			b.WriteString(bg.MaxAge.String())
		}
		for _, e := range r.whitelist {
			b.WriteString("\nregistry=")
			b.WriteString(e.String())
		}
		for _, e := range r.denied {
			b.WriteString("\ndenied=")
			b.WriteString(e.String())
		}
		for _, ref := range r.exemptRefs {
			b.WriteString("\nexempt=")
			b.WriteString(ref)
		}
		for _, e := range r.exemptRepos {
			b.WriteString("\nexempt=")
			b.WriteString(e.String())
		}
		// Which rule is more specific does not depend on the order
		// written, so neither does the hash.
		rewrites := make([]string, 0, r.rewriter.Len())
		for _, m := range r.rewriter.Mirrors() {
			rewrites = append(rewrites, m.String())
		}
		slices.Sort(rewrites)
		for _, m := range rewrites {
			b.WriteString("\nrewrite=")
			b.WriteString(m)
		}
		b.WriteString("\n\n")
	}
	if p.annotate {
		b.WriteString("annotate\n") // file policies add audit annotations
	}
	sum := sha256.Sum256([]byte(b.String()))
	return hex.EncodeToString(sum[:8])
}
