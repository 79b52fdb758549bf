package policy

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Break-glass annotation grammar. The kube-apiserver's ImagePolicyWebhook
// plugin forwards only annotations whose key contains ".image-policy.k8s.io/",
// and the Kubernetes documentation's example is
// "mycluster.image-policy.k8s.io/ticket-1234: break-glass".
const (
	breakGlassSuffix = ".image-policy.k8s.io"
	breakGlassName   = "break-glass"
	breakGlassValue  = "break-glass"
	ticketName       = "ticket"
	expiresName      = "expires"
	// maxTicketLen, maxExpiresLen and maxTickets bound what annotations
	// can push into reasons, logs and audit annotations.
	maxTicketLen  = 128
	maxExpiresLen = 64
	maxTickets    = 4
)

var (
	// dnsSubdomain is the Kubernetes annotation-prefix grammar (RFC 1123
	// subdomain, lower case), so look-alike prefixes never qualify.
	dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	// qualifiedName is the Kubernetes grammar for the name part of a key.
	qualifiedName = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
)

// BreakGlass is a pod's request to override the policy in an emergency.
type BreakGlass struct {
	// Requested is true when at least one annotation asks for break-glass.
	Requested bool
	// Keys are the annotation keys that asked, sorted.
	Keys []string
	// Tickets are the tickets given, sorted and without duplicates.
	Tickets []string
	// Expires are the values of <prefix>.image-policy.k8s.io/expires
	// annotations (RFC 3339 times), unparsed, sorted and without
	// duplicates; every one must hold.
	Expires []string
}

// Ticket joins the tickets with ",", the first four and then how many
// more there are, or returns "" when there are none.
func (b BreakGlass) Ticket() string {
	if len(b.Tickets) <= maxTickets {
		return strings.Join(b.Tickets, ",")
	}
	return fmt.Sprintf("%s,... (%d more)", strings.Join(b.Tickets[:maxTickets], ","), len(b.Tickets)-maxTickets)
}

func (b BreakGlass) ticketSuffix() string {
	if len(b.Tickets) == 0 {
		return ""
	}
	return " (ticket " + b.Ticket() + ")"
}

// ParseBreakGlass reads a pod's annotations. A pod asks for break-glass with
//
//	<prefix>.image-policy.k8s.io/break-glass: "true"
//
// optionally with <prefix>.image-policy.k8s.io/ticket: "<ticket>", or with
//
//	<prefix>.image-policy.k8s.io/<ticket>: "break-glass"
//
// where <prefix> is a non-empty lower-case DNS subdomain. An optional
// <prefix>.image-policy.k8s.io/expires: "<RFC 3339 time>" bounds the
// request in time (see [BreakGlassOptions.MaxAge]). Anything else, such
// as a bare "image-policy.k8s.io/" key or "x.image-policy.k8s.io.evil.com/",
// is ignored.
//
// Tickets and expiries are free text that reasons, logs and audit
// annotations echo, so each is made single-line and printable first:
// blanks, control and invisible characters around it are trimmed, any
// other space becomes ' ', and every other rune that does not print
// (newlines, control characters, zero-width and other format characters,
// invalid UTF-8) becomes U+FFFD. A ticket is then cut to 128 bytes and an
// expiry to 64, ending in "..." when cut. A ticket without a visible
// character (a letter, digit, punctuation or symbol), such as one made of
// zero-width spaces, is no ticket.
func ParseBreakGlass(annotations map[string]string) BreakGlass {
	var b BreakGlass
	var tickets []string
	for key, value := range annotations {
		name, ok := breakGlassKeyName(key)
		if !ok {
			continue
		}
		switch {
		case name == breakGlassName:
			if value == "true" {
				b.Requested = true
				b.Keys = append(b.Keys, key)
			}
		case name == ticketName && value != breakGlassValue:
			if t := strings.TrimFunc(value, blank); strings.IndexFunc(t, visible) >= 0 {
				tickets = append(tickets, Printable(t, maxTicketLen))
			}
		case name == expiresName && value != breakGlassValue:
			b.Expires = append(b.Expires, Printable(strings.TrimFunc(value, blank), maxExpiresLen))
		case value == breakGlassValue:
			b.Requested = true
			b.Keys = append(b.Keys, key)
			tickets = append(tickets, name)
		}
	}
	if !b.Requested {
		return BreakGlass{}
	}
	slices.Sort(b.Keys)
	slices.Sort(tickets)
	b.Tickets = slices.Compact(tickets)
	slices.Sort(b.Expires)
	b.Expires = slices.Compact(b.Expires)
	return b
}

// breakGlassKeyName returns the name part of an annotation key whose prefix
// is a valid "<something>.image-policy.k8s.io".
func breakGlassKeyName(key string) (string, bool) {
	prefix, name, ok := strings.Cut(key, "/")
	if !ok || !qualifiedName.MatchString(name) || len(name) > 63 {
		return "", false
	}
	head, ok := strings.CutSuffix(prefix, breakGlassSuffix)
	if !ok || head == "" || len(prefix) > 253 || !dnsSubdomain.MatchString(head) {
		return "", false
	}
	return name, true
}

// blank reports whether r shows nothing: a space, a control character or
// an invisible one.
func blank(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) || invisible(r) }

// invisible reports whether r is a character that prints as nothing:
// format characters such as U+200B, and the fillers, joiners and
// variation selectors Unicode says to ignore.
func invisible(r rune) bool {
	return unicode.In(r, unicode.Cf, unicode.Other_Default_Ignorable_Code_Point, unicode.Variation_Selector) || r == '\u2800'
}

// visible reports whether r is a letter, digit, punctuation or symbol that
// prints as something; invalid UTF-8 decodes as utf8.RuneError and is not.
func visible(r rune) bool {
	return unicode.In(r, unicode.L, unicode.N, unicode.P, unicode.S) && !invisible(r) && r != utf8.RuneError
}

// Printable makes s single-line and printable, every space a ' ' and every
// rune that does not print U+FFFD, then cuts it to n bytes: how text a
// request or a registry wrote is made safe to print.
func Printable(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case unicode.Is(unicode.Zs, r):
			return ' '
		case !strconv.IsPrint(r) || invisible(r):
			return utf8.RuneError
		}
		return r
	}, s)
	return truncate(s, n)
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}
