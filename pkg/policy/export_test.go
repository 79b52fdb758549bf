package policy

// CacheLen returns how many verdicts p's cache holds, and CacheCap the most
// it may hold.
func CacheLen(p *Policy) int { return p.cache.len() }

// CacheCap is the bound on CacheLen.
const CacheCap = 2 * cacheShards * cacheGeneration
