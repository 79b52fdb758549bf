package policy

// CacheLen returns how many verdicts p's cache holds, and CacheCap the most
// it may hold.
func CacheLen(p *Policy) int { return p.cache.len() }

// NamesLen returns how many parsed references p's cache holds for Pins;
// CacheCap bounds it too.
func NamesLen(p *Policy) int {
	n := 0
	for i := range p.cache.shards {
		s := &p.cache.shards[i]
		s.mu.Lock()
		n += len(s.curTags) + len(s.oldTags)
		s.mu.Unlock()
	}
	return n
}

// CacheCap is the bound on CacheLen.
const CacheCap = 2 * cacheShards * cacheGeneration
