package cluster

import (
	"runtime/debug"
	"sync"
)

// Version is this kvnode's build: the main module's version when it was
// built from a tagged module, otherwise the commit it was built from
// ("devel+<12 hex digits>", "-dirty" for uncommitted changes), or "devel"
// without either. Read from the build information Go records, so no
// build flag can forget it.
var Version = sync.OnceValue(func() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev == "" {
		return "devel"
	}
	return "devel+" + rev + dirty
})
