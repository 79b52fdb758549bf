package policy

import (
	"hash/maphash"
	"sync"

	"github.com/distribution/reference"
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
// are at most maxCachedRef bytes long. The references Pins parses for the
// mutating webhook are kept the same way, under the same bound, beside the
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
	// curNames and oldNames are two generations, as cur and old, of the
	// references parsed for Pins, which the mutating webhook asks for every
	// pinned image of every review.
	curNames, oldNames map[string]reference.Named
}

// named returns ref parsed as reference.ParseNormalizedNamed parses it,
// from the cache when it was parsed before; a reference that does not
// parse is not cached.
func (c *verdictCache) named(ref string) (reference.Named, error) {
	if c == nil || len(ref) > maxCachedRef {
		return reference.ParseNormalizedNamed(ref)
	}
	s := c.shard(ref)
	s.mu.Lock()
	n, ok := s.curNames[ref]
	if !ok {
		if n, ok = s.oldNames[ref]; ok {
			delete(s.oldNames, ref)
			s.addName(ref, n)
		}
	}
	s.mu.Unlock()
	if ok {
		return n, nil
	}
	n, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.addName(ref, n)
	s.mu.Unlock()
	return n, nil
}

func (s *cacheShard) addName(ref string, n reference.Named) {
	if len(s.curNames) >= cacheGeneration {
		s.oldNames, s.curNames = s.curNames, nil
	}
	if s.curNames == nil {
		s.curNames = make(map[string]reference.Named, cacheGeneration)
	}
	s.curNames[ref] = n
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
