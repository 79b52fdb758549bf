// Package docs holds no code: its test keeps the READMEs' links resolving,
// so that moving a section from one README to another cannot strand the
// links that pointed at it.
package docs
