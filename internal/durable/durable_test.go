package durable

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFileReplacesWhole(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(dir, "f", "f.tmp", []byte("new content"), 0o640); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "f"))
	if err != nil || string(b) != "new content" {
		t.Fatalf("f = %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "f.tmp")); !os.IsNotExist(err) {
		t.Fatalf("temporary file left behind: %v", err)
	}
	// A directory that does not exist: an error, nothing created.
	if err := WriteFile(filepath.Join(dir, "missing"), "f", "f.tmp", []byte("x"), 0o600); err == nil {
		t.Fatal("writing into a missing directory succeeded")
	}
}

func TestWriteFileLeavesOldOnRenameError(t *testing.T) {
	dir := t.TempDir()
	// name is a non-empty directory, so the rename over it fails.
	if err := os.MkdirAll(filepath.Join(dir, "f", "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(dir, "f", "f.tmp", []byte("new"), 0o600); err == nil {
		t.Fatal("renaming over a non-empty directory succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "f.tmp")); !os.IsNotExist(err) {
		t.Fatalf("temporary file left behind after a failed rename: %v", err)
	}
	if st, err := os.Stat(filepath.Join(dir, "f", "x")); err != nil || !st.IsDir() {
		t.Fatalf("the old entry changed: %v", err)
	}
}

func TestSyncDir(t *testing.T) {
	if err := SyncDir(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if err := SyncDir(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("syncing a missing directory succeeded")
	}
}
