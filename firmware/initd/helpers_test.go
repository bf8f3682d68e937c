package initd

import (
	"os"
	"os/exec"
)

func lookPath(name string, alts ...string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, a := range alts {
		if _, err := os.Stat(a); err == nil {
			return a, nil
		}
	}
	return exec.LookPath(name)
}

func runCmd(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}
