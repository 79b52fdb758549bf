package policy

import (
	"hash/maphash"
	"sync"
)

// verdictCache remembers what checkImage found for an image under a rule, so
// an image the policy has judged before costs a map look-up instead of a
// reference parse (regular expressions) and the formatting of its messages.
// A cluster runs the same few hundred or thousand images again and again, so
// almost every review hits.
//
// It lives inside the compiled Policy: a reloaded policy starts with an
// empty cache, so no verdict outlives the rules that made it. It is bounded
// against a flood of distinct names (a workload that makes a new tag per
// pod, or a hostile client): each shard keeps two generations of at most
// cacheGeneration entries; when the current one is full it becomes the old
// one and the old one is dropped, and a hit in the old generation moves the
// entry to the current one. Images in use therefore stay, and the cache never
// holds more than 2 × cacheShards × cacheGeneration entries, whose references
// are at most maxCachedRef bytes long. What Pins parses of a reference for
// the mutating webhook is kept the same way, under the same bound, beside the
// verdicts: a parse costs more than pinning a cached tag otherwise does.
type verdictCache struct {
	seed   maphash.Seed
	shards [cacheShards]cacheShard
}

const (
	cacheShards     = 16  // shards, each with its own lock
	cacheGeneration = 512 // entries per shard generation: at most 16,384 in all
	// maxCachedRef bounds a cached key. Valid references are shorter (the
	// name alone is at most 255 bytes); longer strings are invalid, and are
	// judged afresh each time rather than kept.
	maxCachedRef = 512
)

type cacheKey struct {
	rule *rule
	ref  string
}

type cacheShard struct {
	mu       sync.Mutex
	cur, old map[cacheKey][]Violation
	// curTags and oldTags are two generations, as cur and old, of the
	// references parsed for Pins, which the mutating webhook asks for every
	// pinned image of every review.
	curTags, oldTags map[string]tagRef
}

// tagOf returns what Pins and Tags need of ref, from the cache when ref
// was parsed before; a reference that does not parse is not cached.
func (c *verdictCache) tagOf(ref string) (tagRef, error) {
	if c == nil || len(ref) > maxCachedRef {
		return parseTag(ref)
	}
	s := c.shard(ref)
	s.mu.Lock()
	t, ok := s.curTags[ref]
	if !ok {
		if t, ok = s.oldTags[ref]; ok {
			delete(s.oldTags, ref)
			s.addTag(ref, t)
		}
	}
	s.mu.Unlock()
	if ok {
		return t, nil
	}
	t, err := parseTag(ref)
	if err != nil {
		return t, err
	}
	s.mu.Lock()
	s.addTag(ref, t)
	s.mu.Unlock()
	return t, nil
}

func (s *cacheShard) addTag(ref string, t tagRef) {
	if len(s.curTags) >= cacheGeneration {
		s.oldTags, s.curTags = s.curTags, nil
	}
	if s.curTags == nil {
		s.curTags = make(map[string]tagRef, cacheGeneration)
	}
	s.curTags[ref] = t
}

func newVerdictCache() *verdictCache {
	return &verdictCache{seed: maphash.MakeSeed()}
}

func (c *verdictCache) shard(ref string) *cacheShard {
	return &c.shards[maphash.String(c.seed, ref)%cacheShards]
}

// get returns the violations cached for ref under r (nil for an image that
// passes) and whether there were any.
func (c *verdictCache) get(r *rule, ref string) ([]Violation, bool) {
	if len(ref) > maxCachedRef {
		return nil, false
	}
	k := cacheKey{r, ref}
	s := c.shard(ref)
	s.mu.Lock()
	defer s.mu.Unlock()
	if vs, ok := s.cur[k]; ok {
		return vs, true
	}
	vs, ok := s.old[k]
	if ok {
		delete(s.old, k)
		s.add(k, vs)
	}
	return vs, ok
}

// put caches the violations found for ref under r. vs must not be changed
// afterwards: every later review reads it.
func (c *verdictCache) put(r *rule, ref string, vs []Violation) {
	if len(ref) > maxCachedRef {
		return
	}
	s := c.shard(ref)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.add(cacheKey{r, ref}, vs)
}

func (s *cacheShard) add(k cacheKey, vs []Violation) {
	if len(s.cur) >= cacheGeneration {
		s.old, s.cur = s.cur, nil
	}
	if s.cur == nil {
		s.cur = make(map[cacheKey][]Violation, cacheGeneration)
	}
	s.cur[k] = vs
}

// len returns the number of cached entries, for tests.
func (c *verdictCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.cur) + len(s.old)
		s.mu.Unlock()
	}
	return n
}

// judge appends img's violations under r to vs, from the cache when the
// reference was judged before. Cached violations are kept without the
// container's name and source, which differ between pods that share an
// image, and get them back on the way out.
func (c *verdictCache) judge(r *rule, vs []Violation, img Image) []Violation {
	if c == nil { // a Policy not made by Compile
		return r.checkImage(vs, img, nil)
	}
	if cached, ok := c.get(r, img.Ref); ok {
		for _, v := range cached {
			v.Container, v.Source = img.Container, img.Source
			vs = append(vs, v)
		}
		return vs
	}
	n := len(vs)
	vs = r.checkImage(vs, img, nil)
	var found []Violation
	if len(vs) > n {
		found = make([]Violation, len(vs)-n)
		for i, v := range vs[n:] {
			v.Container, v.Source = "", ""
			found[i] = v
		}
	}
	c.put(r, img.Ref, found)
	return vs
}
