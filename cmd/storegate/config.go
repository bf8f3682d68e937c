package main

import (
	"context"
	"fmt"
)

func cmdConfig(_ context.Context, _ []string, s stdio) int {
	fmt.Fprintln(s.Err, "storegate: this command is not built yet")
	return 2
}
