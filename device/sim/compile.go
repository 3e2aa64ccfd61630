package sim

import (
	"github.com/scm-magellano/magc/device"

	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// defaultFlags build the kernels. -fvisibility=hidden keeps each library's
// copy of the runtime private; only the magc_* entry points are exported.
var defaultFlags = []string{
	"-std=c++17", "-O2", "-fPIC", "-shared", "-pthread", "-w",
	"-fvisibility=hidden", "-fno-exceptions", "-fno-rtti", "-fno-math-errno",
}

// compilerID identifies a compiler for the cache key: its path and version.
var compilerIDs sync.Map // string -> string

func compilerID(cxx []string) (string, error) {
	key := strings.Join(cxx, " ")
	if id, ok := compilerIDs.Load(key); ok {
		return id.(string), nil
	}
	path, err := exec.LookPath(cxx[0])
	if err != nil {
		return "", fmt.Errorf("sim: C++ compiler %q not found (set $CXX or use sim.WithCompiler): %v", cxx[0], err)
	}
	out, err := exec.Command(path, append(cxx[1:], "--version")...).Output()
	if err != nil {
		return "", fmt.Errorf("sim: %s --version: %v", cxx[0], err)
	}
	id := path + "\n" + string(out)
	compilerIDs.Store(key, id)
	return id, nil
}

// builds makes concurrent Compile calls of the same library wait for one build.
var (
	buildMu sync.Mutex
	builds  = map[string]*build{}
)

type build struct {
	done chan struct{}
	lib  *loadedLib
	err  error
}

// compileLibrary returns the loaded library for a translation unit: from
// memory, from the disk cache, or built with the C++ compiler.
func compileLibrary(cfg *config, prog *program, tu string) (*loadedLib, error) {
	id, err := compilerID(cfg.cxx)
	if err != nil {
		return nil, err
	}
	digest, err := shimDigest()
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	h.Write(digest)
	fmt.Fprintf(h, "\x00%s\x00%q\x00", id, cfg.flags())
	h.Write([]byte(tu))
	key := hex.EncodeToString(h.Sum(nil))

	buildMu.Lock()
	b, ok := builds[key]
	if !ok {
		b = &build{done: make(chan struct{})}
		builds[key] = b
	}
	buildMu.Unlock()
	if ok {
		<-b.done
		return b.lib, b.err
	}
	b.lib, b.err = buildLibrary(cfg, prog, tu, key)
	if b.err != nil {
		// Keep only successes: a failed build may succeed once the
		// environment is fixed.
		buildMu.Lock()
		delete(builds, key)
		buildMu.Unlock()
	}
	close(b.done)
	return b.lib, b.err
}

func buildLibrary(cfg *config, prog *program, tu, key string) (*loadedLib, error) {
	dir, err := cfg.cacheDir()
	if err != nil {
		return nil, err
	}
	so := filepath.Join(dir, key+".so")
	if _, err := os.Stat(so); err == nil {
		if lib, err := dlopen(so); err == nil {
			return lib, nil
		}
		// A damaged cache entry: build it again.
	}
	tmp, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return nil, fmt.Errorf("sim: %v", err)
	}
	defer os.RemoveAll(tmp)
	inc := filepath.Join(tmp, "include")
	if err := writeShim(inc); err != nil {
		return nil, fmt.Errorf("sim: writing the shim: %v", err)
	}
	cpp := filepath.Join(tmp, "kernels.cpp")
	if err := os.WriteFile(cpp, []byte(tu), 0o644); err != nil {
		return nil, fmt.Errorf("sim: %v", err)
	}
	out := filepath.Join(tmp, "kernels.so")
	args := append(append([]string{}, cfg.cxx[1:]...), cfg.flags()...)
	args = append(args, "-isystem", inc, "-o", out, cpp)
	cmd := exec.Command(cfg.cxx[0], args...)
	cmd.Dir = tmp
	var msgs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &msgs, &msgs
	if err := cmd.Run(); err != nil {
		text := strings.ReplaceAll(msgs.String(), inc+"/", "")
		text = strings.ReplaceAll(text, tmp+"/", "")
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return nil, fmt.Errorf("sim: running %s: %v", cfg.cxx[0], err)
		}
		return nil, newCompileError(cfg.cxx[0], prog, text)
	}
	// Publish atomically: concurrent processes may build the same library.
	if err := os.Rename(out, so); err != nil {
		return nil, fmt.Errorf("sim: caching the library: %v", err)
	}
	return dlopen(so)
}

var (
	diagRE      = regexp.MustCompile(`^(.+?):(\d+):(\d+): (?:fatal )?error: (.*)$`)
	userLocRE   = regexp.MustCompile(`^` + regexp.QuoteMeta(userFile) + `:(\d+):(\d+):`)
	clangSARE   = regexp.MustCompile(`static_assert failed(?: due to requirement '.*')?:? "(.*)"`)
	gccSARE     = regexp.MustCompile(`^static assertion failed: (.*)`)
	tgBytesGCC  = regexp.MustCompile(`N = (\d+)`)
	tgBytesClng = regexp.MustCompile(`'(\d+)UL <= `)
)

// newCompileError turns compiler output into diagnostics. An error inside
// the shim (a static_assert naming an unsupported feature) is placed at the
// user's line that led to it: gcc prints that line before the error
// ("required from here"), clang after it ("in instantiation ... requested
// here").
func newCompileError(compiler string, prog *program, out string) *device.CompileError {
	e := &device.CompileError{Who: "sim: " + filepath.Base(compiler), File: userFile, Output: out}
	lines := strings.Split(out, "\n")
	var errIdx []int
	for i, l := range lines {
		if diagRE.MatchString(l) {
			errIdx = append(errIdx, i)
		}
	}
	for n, i := range errIdx {
		m := diagRE.FindStringSubmatch(lines[i])
		file, msg := m[1], m[4]
		d := device.Diagnostic{Msg: msg}
		if file == userFile {
			d.Line, _ = strconv.Atoi(m[2])
			d.Col, _ = strconv.Atoi(m[3])
		} else {
			lo, hi := 0, len(lines)
			if n > 0 {
				lo = errIdx[n-1] + 1
			}
			if n+1 < len(errIdx) {
				hi = errIdx[n+1]
			}
			ctx := lines[lo:hi]
			loc := ""
			for j := i - lo - 1; j >= 0; j-- { // gcc: before the error
				if userLocRE.MatchString(ctx[j]) {
					loc = ctx[j]
					break
				}
			}
			if loc == "" {
				for _, l := range ctx[i-lo:] { // clang: after it
					if userLocRE.MatchString(l) {
						loc = l
						break
					}
				}
			}
			if lm := userLocRE.FindStringSubmatch(loc); lm != nil {
				d.Line, _ = strconv.Atoi(lm[1])
				d.Col, _ = strconv.Atoi(lm[2])
			}
			if sm := clangSARE.FindStringSubmatch(msg); sm != nil {
				d.Msg = sm[1]
			} else if sm := gccSARE.FindStringSubmatch(msg); sm != nil {
				d.Msg = sm[1]
			}
			if strings.Contains(d.Msg, "threadgroup memory over the 32 KiB") {
				d.Msg = tgMemoryMessage(prog, d.Line, strings.Join(ctx, "\n")+"\n"+msg)
				d.Col = 0 // the column is in text the sim added to the line
			}
			if file == wrapperFile && d.Line == 0 {
				d.Msg = "in magc's generated kernel wrapper: " + d.Msg
			}
		}
		e.Diagnostics = append(e.Diagnostics, d)
	}
	// The shim's own messages name the unsupported feature: show them first.
	sort.SliceStable(e.Diagnostics, func(a, b int) bool {
		return strings.HasPrefix(e.Diagnostics[a].Msg, "magc sim:") && !strings.HasPrefix(e.Diagnostics[b].Msg, "magc sim:")
	})
	return e
}

func tgMemoryMessage(prog *program, line int, ctx string) string {
	kernel := "a kernel"
	for _, k := range prog.kernels {
		if k.line <= line && line <= k.endLine {
			kernel = "kernel " + k.name
		}
	}
	bytes := "more than 32768"
	if m := tgBytesGCC.FindStringSubmatch(ctx); m != nil {
		bytes = m[1]
	} else if m := tgBytesClng.FindStringSubmatch(ctx); m != nil {
		bytes = m[1]
	}
	return fmt.Sprintf("magc sim: %s declares %s bytes of threadgroup memory; the limit is 32768 (32 KiB, as on Apple M4)", kernel, bytes)
}
