package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
)

// Hash identifies the policy's rules: two policies with the same hash decide
// every input alike, with the same messages. It is the hash that decision
// logs and the imagegate_policy_info metric carry, so an operator can tell
// which policy a replica applied. Every field that changes a decision or a
// message must be part of it.
//
// It is computed on each call (well under a microsecond for a usual
// whitelist); callers that need it per request should keep it beside the
// policy.
func (p *Policy) Hash() string {
	var b strings.Builder
	b.WriteString("mode=")
	b.WriteString(string(p.mode))
	b.WriteString("\nreject-latest=")
	b.WriteString(strconv.FormatBool(p.rejectLatest))
	b.WriteString("\nallow-break-glass=")
	b.WriteString(strconv.FormatBool(p.allowBreakGlass))
	for _, e := range p.whitelist {
		b.WriteString("\nregistry=")
		b.WriteString(e.String())
	}
	sum := sha256.Sum256([]byte(b.String()))
	return hex.EncodeToString(sum[:8])
}
