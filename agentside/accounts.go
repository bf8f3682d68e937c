package agentside

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// lookupIDs finds a user's uid in root's /etc/passwd and a group's gid in
// its /etc/group. It reads the files itself (not os/user) so it looks at the
// system under root, the one being configured.
func lookupIDs(root, user, group string) (uid, gid int, ok bool) {
	if root == "" {
		root = "/"
	}
	pw, err := os.ReadFile(filepath.Join(root, "etc", "passwd"))
	if err != nil {
		return -1, -1, false
	}
	gr, err := os.ReadFile(filepath.Join(root, "etc", "group"))
	if err != nil {
		return -1, -1, false
	}
	uid, uok := accountID(pw, user)
	gid, gok := accountID(gr, group)
	return uid, gid, uok && gok
}

// accountID reads the third field (the uid or gid) of name's line in a
// passwd- or group-format file: name:password:id:...
func accountID(content []byte, name string) (int, bool) {
	if name == "" {
		return -1, false
	}
	for _, line := range strings.Split(string(content), "\n") {
		fields := strings.SplitN(line, ":", 4)
		if len(fields) < 3 || fields[0] != name {
			continue
		}
		id, err := strconv.ParseUint(fields[2], 10, 31)
		if err != nil {
			return -1, false
		}
		return int(id), true
	}
	return -1, false
}
