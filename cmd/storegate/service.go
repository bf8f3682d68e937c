package main

import (
	"context"
	"fmt"
)

func cmdService(_ context.Context, _ []string, s stdio) int {
	fmt.Fprintln(s.Err, "storegate: this command is not built yet")
	return 2
}
