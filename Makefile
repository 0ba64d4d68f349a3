# CGO_ENABLED=0 everywhere: libcap's psx would otherwise switch to cgo silently.
export CGO_ENABLED := 0

VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
GOFLAGS_BUILD := -trimpath -ldflags '-s -w -X main.version=$(VERSION)'

.PHONY: all test unit clean

all: atopacctd

atopacctd: $(wildcard *.go) go.mod go.sum
	go build $(GOFLAGS_BUILD) -o $@ .

# Every test: unit tests (no root needed) and the TestIntegration... tests,
# which need root and run one at a time (-p 1, no t.Parallel).
test: atopacctd
	go vet ./...
	go test -count=1 -p 1 -timeout 20m ./...

unit:
	go test -count=1 -short ./...

clean:
	rm -f atopacctd
	go clean -testcache
