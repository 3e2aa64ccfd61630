package gen

import (
	"strings"
	"testing"
)

func TestTextStreamHoldsSplitCharacters(t *testing.T) {
	var b strings.Builder
	s := &TextStream{W: &b}
	word := []byte("a漢🙂")
	// Byte by byte: nothing of a character shows before its last byte.
	var seen []string
	for _, c := range word {
		if err := s.Write([]byte{c}); err != nil {
			t.Fatal(err)
		}
		seen = append(seen, b.String())
	}
	if got := strings.Join(seen, "|"); got != "a|a|a|a漢|a漢|a漢|a漢|a漢🙂" {
		t.Fatalf("stream showed %q", got)
	}
	s.Write([]byte{0xe6, 0xbc}) // a character cut short by the end
	s.Flush()
	if b.String() != "a漢🙂\uFFFD\uFFFD" {
		t.Fatalf("flush wrote %q", b.String())
	}
}
