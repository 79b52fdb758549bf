// Package jsonscan reads JSON in one pass, without reflection, for the few
// wire types imagegate decodes on every review.
//
// encoding/json reads a document at least twice (it validates the whole of
// it before decoding, and skips what it does not decode by scanning it
// again) and fills structs by reflection; for a review that is most of the
// cost of answering it. A Scanner validates and reads in the same pass and
// its callers say field by field what they want.
//
// A Scanner never explains an error, and it is not a second opinion on what
// JSON means. It stops at the first thing it would not read exactly as
// encoding/json reads it into the caller's Go type: malformed JSON, a value
// of the wrong type, a member name that encoding/json would match to a field
// only by ignoring case or after unescaping it, a member repeated in one
// object (encoding/json merges the second into the first), nesting deeper
// than MaxDepth. Its caller then decodes the same bytes with encoding/json,
// which reads them or says what is wrong with them. So a Scanner may give up
// on more than encoding/json rejects, but what it accepts it must read as
// encoding/json does; every caller has a fuzz target comparing the two.
package jsonscan

import (
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// MaxDepth is how deeply a Scanner follows nested objects and arrays.
// encoding/json allows 10,000 levels; Kubernetes objects use about 20, and
// a deeper document is left to encoding/json.
const MaxDepth = 512

// Scanner reads one JSON document; New makes one.
// Once it stops, every read returns a zero value and OK reports false.
type Scanner struct {
	data    []byte
	pos     int
	depth   int
	stopped bool
}

// New returns a Scanner at the start of data. The Scanner does not copy
// data, and the strings it returns do not share its memory.
func New(data []byte) Scanner { return Scanner{data: data} }

// OK reports whether the Scanner has read everything so far as
// encoding/json would.
func (s *Scanner) OK() bool { return !s.stopped }

// Stop gives up on the document, for a value the caller's type does not
// take; every later read returns a zero value.
func (s *Scanner) Stop() { s.stopped = true }

// Offset is the index in data just past what the Scanner has read: after
// reading a value, where it ends.
func (s *Scanner) Offset() int { return s.pos }

// ValueStart skips whitespace and returns the index in data where the next
// value starts.
func (s *Scanner) ValueStart() int {
	s.peek()
	return s.pos
}

// End checks that nothing but whitespace follows the value read and
// reports whether the whole document was read.
func (s *Scanner) End() bool {
	if s.peek() != 0 || s.pos != len(s.data) {
		s.Stop()
	}
	return !s.stopped
}

// peek skips whitespace and returns the next byte, or 0 at the end of the
// data or once stopped (a raw 0 byte is never valid JSON there either).
func (s *Scanner) peek() byte {
	if s.stopped {
		return 0
	}
	for s.pos < len(s.data) {
		switch c := s.data[s.pos]; c {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return c
		}
	}
	return 0
}

// literal consumes word (true, false or null) at the current position.
func (s *Scanner) literal(word string) bool {
	if len(s.data)-s.pos >= len(word) && string(s.data[s.pos:s.pos+len(word)]) == word {
		s.pos += len(word)
		return true
	}
	s.Stop()
	return false
}

// Null consumes a null if one comes next and reports whether it did.
func (s *Scanner) Null() bool {
	if s.peek() == 'n' {
		return s.literal("null")
	}
	return false
}

// ReadString reads a string; null reads as "", as encoding/json leaves a
// string untouched by null.
func (s *Scanner) ReadString() string {
	switch s.peek() {
	case '"':
		return s.stringValue()
	case 'n':
		s.literal("null")
	default:
		s.Stop()
	}
	return ""
}

// SkipString checks that a string or null comes next and skips it.
func (s *Scanner) SkipString() {
	switch s.peek() {
	case '"':
		s.scanString()
	case 'n':
		s.literal("null")
	default:
		s.Stop()
	}
}

// ReadBool reads true or false; null reads as false.
func (s *Scanner) ReadBool() bool {
	switch s.peek() {
	case 't':
		return s.literal("true")
	case 'f':
		s.literal("false")
	case 'n':
		s.literal("null")
	default:
		s.Stop()
	}
	return false
}

// ReadStrings reads an array of strings (null elements read as ""). null
// reads as a nil slice, [] as an empty one, as encoding/json does.
func (s *Scanner) ReadStrings() []string {
	if s.Null() {
		return nil
	}
	out := []string{}
	for a := s.Array(); a.Next(); {
		out = append(out, s.ReadString())
	}
	return out
}

// SkipStrings checks that an array of strings or null comes next and skips
// it.
func (s *Scanner) SkipStrings() {
	for a := s.Array(); a.Next(); {
		s.SkipString()
	}
}

// ReadStringMap reads an object of strings into a map (null values read as
// ""; of a repeated name the last value counts). null reads as a nil map,
// {} as an empty one, as encoding/json does.
func (s *Scanner) ReadStringMap() map[string]string {
	if s.Null() {
		return nil
	}
	out := map[string]string{}
	for o := s.Object(nil); o.Next(); {
		k := o.Key()
		out[k] = s.ReadString()
	}
	if s.stopped {
		return nil
	}
	return out
}

// SkipStringMap checks that an object of strings or null comes next and
// skips it.
func (s *Scanner) SkipStringMap() {
	for o := s.Object(nil); o.Next(); {
		s.SkipString()
	}
}

// scanString reads the string that starts at the current position (an
// opening quote) and returns where its contents start and end (the closing
// quote), whether it has escapes and whether it has bytes outside ASCII.
func (s *Scanner) scanString() (start, end int, escaped, nonASCII bool) {
	d := s.data
	i := s.pos + 1
	start = i
	for i < len(d) {
		c := d[i]
		switch {
		case c == '"':
			s.pos = i + 1
			return start, i, escaped, nonASCII
		case c == '\\':
			escaped = true
			if i+1 >= len(d) {
				s.Stop()
				return start, start, false, false
			}
			switch d[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(d) || !isHex(d[i+2]) || !isHex(d[i+3]) || !isHex(d[i+4]) || !isHex(d[i+5]) {
					s.Stop()
					return start, start, false, false
				}
				i += 6
			default:
				s.Stop()
				return start, start, false, false
			}
		case c < 0x20:
			s.Stop()
			return start, start, false, false
		default:
			if c >= utf8.RuneSelf {
				nonASCII = true
			}
			i++
		}
	}
	s.Stop()
	return start, start, false, false
}

// stringValue reads the string at the current position. Plain strings are
// copied as they are, which is what encoding/json does with them too; one
// with escapes or invalid UTF-8 is unquoted by encoding/json itself, so
// every such rule (surrogates, replacement characters) stays its own.
func (s *Scanner) stringValue() string {
	start, end, escaped, nonASCII := s.scanString()
	if s.stopped {
		return ""
	}
	raw := s.data[start:end]
	if !escaped && (!nonASCII || utf8.Valid(raw)) {
		return string(raw)
	}
	var v string
	if err := json.Unmarshal(s.data[start-1:end+1], &v); err != nil {
		s.Stop()
		return ""
	}
	return v
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// number reads a number at the current position by JSON's grammar.
func (s *Scanner) number() {
	d, i := s.data, s.pos
	if i < len(d) && d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case i < len(d) && '1' <= d[i] && d[i] <= '9':
		i = digits(d, i)
	default:
		s.Stop()
		return
	}
	if i < len(d) && d[i] == '.' {
		if i+1 >= len(d) || !isDigit(d[i+1]) {
			s.Stop()
			return
		}
		i = digits(d, i+1)
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if i >= len(d) || !isDigit(d[i]) {
			s.Stop()
			return
		}
		i = digits(d, i)
	}
	s.pos = i
}

// digits returns the index of the first byte from i on that is not a digit.
func digits(d []byte, i int) int {
	for i < len(d) && isDigit(d[i]) {
		i++
	}
	return i
}

// Skip checks that a well-formed value of any type comes next and skips
// it. It keeps its own stack of open objects and arrays instead of
// recursing, so a deep value costs no goroutine stack.
func (s *Scanner) Skip() {
	var inObject [MaxDepth / 64]uint64 // one bit per open level: 1 object, 0 array
	depth := 0
	for s.skipValue(&inObject, &depth) {
		// After a value: close the objects and arrays that end here, then
		// go on to the next value, if any.
		for {
			if depth == 0 {
				return
			}
			object := inObject[(depth-1)/64]&(1<<((depth-1)%64)) != 0
			c := s.peek()
			if object && c == '}' || !object && c == ']' {
				s.pos++
				depth--
				continue
			}
			if c != ',' {
				s.Stop()
				return
			}
			s.pos++
			if object && !s.memberName() {
				return
			}
			break
		}
	}
}

// skipValue skips one scalar or empty object or array, opening every
// non-empty object or array on the way to it (and reading its first
// member's name), and reports whether the Scanner goes on.
func (s *Scanner) skipValue(inObject *[MaxDepth / 64]uint64, depth *int) bool {
	for {
		switch c := s.peek(); {
		case c == '{' || c == '[':
			s.pos++
			if s.peek() == c+2 { // '}' is '{'+2 and ']' is '['+2: empty
				s.pos++
				return true
			}
			if s.depth+*depth >= MaxDepth {
				s.Stop()
				return false
			}
			if c == '{' {
				inObject[*depth/64] |= 1 << (*depth % 64)
			} else {
				inObject[*depth/64] &^= 1 << (*depth % 64)
			}
			*depth++
			if c == '{' && !s.memberName() {
				return false
			}
			// and on to the first member's or element's value
		case c == '"':
			s.scanString()
			return !s.stopped
		case c == 't':
			return s.literal("true")
		case c == 'f':
			return s.literal("false")
		case c == 'n':
			return s.literal("null")
		case c == '-' || isDigit(c):
			s.number()
			return !s.stopped
		default:
			s.Stop()
			return false
		}
	}
}

// memberName skips a member's name and its colon.
func (s *Scanner) memberName() bool {
	if s.peek() != '"' {
		s.Stop()
		return false
	}
	s.scanString()
	if s.peek() != ':' {
		s.Stop()
		return false
	}
	s.pos++
	return !s.stopped
}

// open consumes the opening bracket c of an object or array, or a null
// (then there is nothing to read in it).
func (s *Scanner) open(c byte) (isOpen bool) {
	switch s.peek() {
	case c:
		if s.depth >= MaxDepth {
			s.Stop()
			return false
		}
		s.pos++
		s.depth++
		return true
	case 'n':
		s.literal("null")
	default:
		s.Stop()
	}
	return false
}

// Fields are the member names of a Go struct as encoding/json knows them:
// every field it would fill, including those the caller only checks.
type Fields struct {
	names []string
}

// NewFields lists a struct's member names, at most 64.
func NewFields(names ...string) *Fields {
	if len(names) > 64 {
		panic(fmt.Sprintf("jsonscan: %d fields, at most 64", len(names)))
	}
	return &Fields{names: names}
}

// Object reads the members of an object one by one; see Scanner.Object.
type Object struct {
	s       *Scanner
	fields  *Fields
	seen    uint64
	name    string
	key     [2]int // a map member's key: its contents in data
	escaped bool   // the key has escapes
	unicode bool   // the key has bytes outside ASCII
	state   uint8
}

const (
	beforeFirst uint8 = iota
	inMembers
	done
)

// Object starts reading an object, or null, which has no members. With
// fields it reads a struct: Name says which field each member fills and
// Next stops the Scanner on a name that encoding/json would match to one
// of fields by ignoring case or after unescaping it, and on a field
// repeated. With nil fields it reads a map: Key gives each member's name.
// After each Next that returns true the caller reads or skips exactly one
// value.
func (s *Scanner) Object(fields *Fields) Object {
	o := Object{s: s, fields: fields}
	if !s.open('{') {
		o.state = done
	}
	return o
}

// Next moves to the next member and reports whether there is one.
func (o *Object) Next() bool {
	s := o.s
	if o.state == done || s.stopped {
		return false
	}
	c := s.peek()
	switch {
	case c == '}':
		s.pos++
		s.depth--
		o.state = done
		return false
	case o.state == inMembers && c == ',':
		s.pos++
		c = s.peek()
	case o.state == inMembers:
		s.Stop()
		return false
	}
	o.state = inMembers
	if c != '"' {
		s.Stop()
		return false
	}
	start, end, escaped, nonASCII := s.scanString()
	if s.stopped {
		return false
	}
	if o.fields == nil {
		o.key, o.escaped, o.unicode = [2]int{start, end}, escaped, nonASCII
	} else {
		if escaped || nonASCII {
			// encoding/json unescapes names and folds non-ASCII letters
			// (the Kelvin sign is a K) before matching them.
			s.Stop()
			return false
		}
		o.name = o.fields.match(s, s.data[start:end], &o.seen)
	}
	if s.peek() != ':' {
		s.Stop()
		return false
	}
	s.pos++
	return !s.stopped
}

// Name is the field the current member fills, or "" for a name that is
// none of the struct's: its value is the caller's to skip.
func (o *Object) Name() string { return o.name }

// Key is the current member's name, unescaped, when reading a map.
func (o *Object) Key() string {
	raw := o.s.data[o.key[0]:o.key[1]]
	if !o.escaped && (!o.unicode || utf8.Valid(raw)) {
		return string(raw)
	}
	var k string
	if err := json.Unmarshal(o.s.data[o.key[0]-1:o.key[1]+1], &k); err != nil {
		o.s.Stop()
	}
	return k
}

// match finds name among the fields, marking it seen. It stops s on a
// field seen before and on a name equal to a field's but for the case of
// its ASCII letters, which encoding/json matches too.
func (f *Fields) match(s *Scanner, name []byte, seen *uint64) string {
	for i, n := range f.names {
		if string(name) == n {
			if *seen&(1<<i) != 0 {
				s.Stop()
				return ""
			}
			*seen |= 1 << i
			return n
		}
	}
	for _, n := range f.names {
		if equalFoldASCII(name, n) {
			s.Stop()
			return ""
		}
	}
	return ""
}

func equalFoldASCII(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		x, y := b[i], s[i]
		if 'a' <= x && x <= 'z' {
			x -= 'a' - 'A'
		}
		if 'a' <= y && y <= 'z' {
			y -= 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// Array reads the elements of an array one by one; see Scanner.Array.
type Array struct {
	s     *Scanner
	state uint8
}

// Array starts reading an array, or null, which has no elements. After
// each Next that returns true the caller reads or skips exactly one value.
func (s *Scanner) Array() Array {
	a := Array{s: s}
	if !s.open('[') {
		a.state = done
	}
	return a
}

// Next moves to the next element and reports whether there is one.
func (a *Array) Next() bool {
	s := a.s
	if a.state == done || s.stopped {
		return false
	}
	switch c := s.peek(); {
	case c == ']':
		s.pos++
		s.depth--
		a.state = done
		return false
	case a.state == inMembers && c == ',':
		s.pos++
	case a.state == inMembers:
		s.Stop()
		return false
	}
	a.state = inMembers
	return !s.stopped
}
