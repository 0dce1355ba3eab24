#!/bin/sh
# Regenerates docs/reference.md from the options table in the binary.
set -eu
cd "$(dirname "$0")/.."
AGENT=${AGENT:-build/pylon-agent}
{
	sed -n '1,/^<!-- BEGIN GENERATED -->$/p' docs/reference.md
	"$AGENT" version --reference
	sed -n '/^<!-- END GENERATED -->$/,$p' docs/reference.md
} >docs/reference.md.new
mv docs/reference.md.new docs/reference.md
