package ot

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestApplyCases(t *testing.T) {
	for _, tc := range applyCases {
		t.Run(tc.Name, func(t *testing.T) {
			got, err := Apply(tc.Doc, tc.Op)
			if tc.Error {
				if err == nil || !errors.Is(err, ErrInvalid) {
					t.Fatalf("Apply(%q, %v) = %q, %v; want an ErrInvalid error", tc.Doc, tc.Op, got, err)
				}
				return
			}
			if err != nil || got != tc.Result {
				t.Fatalf("Apply(%q, %v) = %q, %v; want %q", tc.Doc, tc.Op, got, err, tc.Result)
			}
		})
	}
}

func TestTransformCases(t *testing.T) {
	for _, tc := range transformCases {
		t.Run(tc.Name, func(t *testing.T) {
			side := Left
			if tc.Side == "right" {
				side = Right
			}
			got, err := Transform(tc.A, tc.B, side)
			if err != nil || !Equal(got, tc.Result) {
				t.Fatalf("Transform(%v, %v, %v) = %v, %v; want %v", tc.A, tc.B, side, got, err, tc.Result)
			}
			other := Right
			if side == Right {
				other = Left
			}
			checkTP1(t, tc.Doc, tc.A, tc.B, side, other)
		})
	}
}

// checkTP1 asserts that a and b converge on doc when transformed with the
// given sides.
func checkTP1(t *testing.T, doc string, a, b Op, sideA, sideB Side) {
	t.Helper()
	a2, err := Transform(a, b, sideA)
	if err != nil {
		t.Fatalf("Transform(a, b): %v", err)
	}
	b2, err := Transform(b, a, sideB)
	if err != nil {
		t.Fatalf("Transform(b, a): %v", err)
	}
	sa, err := Apply(doc, a)
	if err != nil {
		t.Fatalf("Apply(doc, a=%v): %v", a, err)
	}
	sb, err := Apply(doc, b)
	if err != nil {
		t.Fatalf("Apply(doc, b=%v): %v", b, err)
	}
	left, err := Apply(sa, b2)
	if err != nil {
		t.Fatalf("Apply(Apply(doc, a), b'=%v): %v", b2, err)
	}
	right, err := Apply(sb, a2)
	if err != nil {
		t.Fatalf("Apply(Apply(doc, b), a'=%v): %v", a2, err)
	}
	if left != right {
		t.Fatalf("TP1 fails on doc %q\na=%v b=%v\na'=%v b'=%v\ndoc·a·b'=%q\ndoc·b·a'=%q", doc, a, b, a2, b2, left, right)
	}
}

func TestComposeCases(t *testing.T) {
	for _, tc := range composeCases {
		t.Run(tc.Name, func(t *testing.T) {
			got, err := Compose(tc.A, tc.B)
			if err != nil || !Equal(got, tc.Result) {
				t.Fatalf("Compose(%v, %v) = %v, %v; want %v", tc.A, tc.B, got, err, tc.Result)
			}
			checkCompose(t, tc.Doc, tc.A, tc.B)
		})
	}
}

func checkCompose(t *testing.T, doc string, a, b Op) {
	t.Helper()
	c, err := Compose(a, b)
	if err != nil {
		t.Fatalf("Compose(%v, %v): %v", a, b, err)
	}
	mid, err := Apply(doc, a)
	if err != nil {
		t.Fatalf("Apply(doc, a): %v", err)
	}
	want, err := Apply(mid, b)
	if err != nil {
		t.Fatalf("Apply(Apply(doc, a), b): %v", err)
	}
	got, err := Apply(doc, c)
	if err != nil || got != want {
		t.Fatalf("doc %q: Apply(doc, Compose(a=%v, b=%v)=%v) = %q, %v; sequential gives %q", doc, a, b, c, got, err, want)
	}
}

func TestTransformCursorCases(t *testing.T) {
	for _, tc := range cursorCases {
		t.Run(tc.Name, func(t *testing.T) {
			if got := TransformCursor(tc.Pos, tc.Op, tc.Own); got != tc.Result {
				t.Fatalf("TransformCursor(%d, %v, %v) = %d; want %d", tc.Pos, tc.Op, tc.Own, got, tc.Result)
			}
		})
	}
}

func TestTransformSelectionCases(t *testing.T) {
	for _, tc := range selectionCases {
		t.Run(tc.Name, func(t *testing.T) {
			a, h := TransformSelection(tc.Anchor, tc.Head, tc.Op, tc.Own)
			if [2]int{a, h} != tc.Result {
				t.Fatalf("TransformSelection(%d, %d, %v, %v) = %d, %d; want %v", tc.Anchor, tc.Head, tc.Op, tc.Own, a, h, tc.Result)
			}
		})
	}
}

func TestOwnsCaretCases(t *testing.T) {
	for _, tc := range ownsCaretCases {
		t.Run(tc.Name, func(t *testing.T) {
			if got := OwnsCaret(tc.CaretUser, tc.CaretClient, tc.OpUser, tc.OpClient); got != tc.Result {
				t.Fatalf("OwnsCaret(%q, %q, %q, %q) = %v; want %v", tc.CaretUser, tc.CaretClient, tc.OpUser, tc.OpClient, got, tc.Result)
			}
		})
	}
}

func TestNormalizeCases(t *testing.T) {
	for _, tc := range normalizeCases {
		t.Run(tc.Name, func(t *testing.T) {
			if got := tc.Op.Normalize(); !Equal(got, tc.Result) {
				t.Fatalf("Normalize(%v) = %v; want %v", tc.Op, got, tc.Result)
			}
		})
	}
}

func TestNormalizeDoesNotAlias(t *testing.T) {
	op := Op{ins("a"), ins("b"), r(1)}
	n := op.Normalize()
	n[0].Insert = "zzz"
	if op[0].Insert != "a" || op[1].Insert != "b" || len(op) != 3 {
		t.Fatalf("Normalize changed its input: %v", op)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		op   Op
		want string // substring of the error; empty means valid
	}{
		{"nil", nil, ""},
		{"mixed valid", Op{r(1), ins("x"), del(2)}, ""},
		{"adjacent like components are valid", Op{r(1), r(1)}, ""},
		{"empty component", Op{{}}, "component 0 is empty"},
		{"two fields", Op{r(1), {Retain: 1, Insert: "x"}}, "component 1 sets more than one"},
		{"negative retain", Op{r(-1)}, "retain count -1 is not positive"},
		{"negative delete", Op{del(-2)}, "delete count -2 is not positive"},
		{"invalid utf-8", Op{ins("a\xffb")}, "not valid UTF-8"},
		{"count too large", Op{r(MaxCount + 1)}, "count exceeds"},
		{"sum too large", Op{r(MaxCount), del(1)}, "operation length exceeds"},
		{"sum near int overflow", Op{r(MaxCount), r(MaxCount), r(MaxCount)}, "operation length exceeds"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.op.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate(%#v) = %v; want nil", tc.op, err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate(%#v) = %v; want ErrInvalid containing %q", tc.op, err, tc.want)
			}
		})
	}
}

func TestInvalidOpsAreErrorsEverywhere(t *testing.T) {
	bad := Op{r(1), {Retain: 1, Delete: 1}}
	if _, err := Apply("abc", bad); !errors.Is(err, ErrInvalid) {
		t.Errorf("Apply: %v", err)
	}
	if _, err := Transform(bad, nil, Left); !errors.Is(err, ErrInvalid) {
		t.Errorf("Transform first: %v", err)
	}
	if _, err := Transform(nil, bad, Left); !errors.Is(err, ErrInvalid) {
		t.Errorf("Transform second: %v", err)
	}
	if _, err := Transform(nil, nil, Side(7)); !errors.Is(err, ErrInvalid) {
		t.Errorf("Transform side 7: %v", err)
	}
	if _, err := Compose(bad, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("Compose first: %v", err)
	}
	if _, err := Compose(nil, bad); !errors.Is(err, ErrInvalid) {
		t.Errorf("Compose second: %v", err)
	}
	if _, err := json.Marshal(bad); !errors.Is(err, ErrInvalid) {
		t.Errorf("Marshal: %v", err)
	}
}

func TestLengths(t *testing.T) {
	tests := []struct {
		op           Op
		base, target int
		noop         bool
	}{
		{nil, 0, 0, true},
		{Op{r(3)}, 3, 3, true},
		{Op{r(2), ins("😀é"), del(4)}, 6, 4, false},
		{Op{del(1)}, 1, 0, false},
	}
	for _, tc := range tests {
		if b, tl, n := tc.op.BaseLen(), tc.op.TargetLen(), tc.op.IsNoop(); b != tc.base || tl != tc.target || n != tc.noop {
			t.Errorf("%v: BaseLen %d TargetLen %d IsNoop %v; want %d %d %v", tc.op, b, tl, n, tc.base, tc.target, tc.noop)
		}
	}
}

func TestMarshalJSON(t *testing.T) {
	tests := []struct {
		op   Op
		want string
	}{
		{nil, `[]`},
		{Op{r(5), ins("abc"), del(3)}, `[5,"abc",{"d":3}]`},
		{Op{ins("q\"\\\n\t\r\x01</>&😀\u2028")}, `["q\"\\\n\t\r\u0001</>&😀\u2028"]`},
	}
	for _, tc := range tests {
		got, err := json.Marshal(tc.op)
		if err != nil {
			t.Fatalf("Marshal(%#v): %v", tc.op, err)
		}
		// encoding/json re-escapes HTML characters inside marshaller output;
		// compare the decoded form as well as our own writer's bytes.
		if own := tc.op.String(); own != tc.want {
			t.Errorf("String(%#v) = %s; want %s", tc.op, own, tc.want)
		}
		var back Op
		if err := json.Unmarshal(got, &back); err != nil || !Equal(back, tc.op) {
			t.Errorf("round trip of %s = %#v, %v", got, back, err)
		}
	}
	type entry struct {
		Op Op `json:"op"`
	}
	b, err := json.Marshal(entry{})
	if err != nil || string(b) != `{"op":[]}` {
		t.Fatalf("zero Op in a struct = %s, %v; want {\"op\":[]}", b, err)
	}
}

func TestUnmarshalJSON(t *testing.T) {
	tests := []struct {
		in   string
		want Op
	}{
		{`[]`, Op{}},
		{` [ 5 , "abc" , { "d" : 3 } ] `, Op{r(5), ins("abc"), del(3)}},
		{`["\u00e9\ud83d\ude00\n"]`, Op{ins("é😀\n")}},
		{`[{"\u0064":2}]`, Op{del(2)}},
		{`[1,1,"a","b"]`, Op{r(1), r(1), ins("a"), ins("b")}},
		{`[9007199254740991]`, Op{r(MaxCount)}},
	}
	for _, tc := range tests {
		var got Op
		if err := json.Unmarshal([]byte(tc.in), &got); err != nil || !Equal(got, tc.want) {
			t.Errorf("Unmarshal(%s) = %#v, %v; want %#v", tc.in, got, err, tc.want)
		}
		direct, err := ParseOp([]byte(tc.in))
		if err != nil || !Equal(direct, tc.want) {
			t.Errorf("ParseOp(%s) = %#v, %v", tc.in, direct, err)
		}
	}
}

func TestUnmarshalRejects(t *testing.T) {
	for _, tc := range invalidCases {
		t.Run(tc.Name, func(t *testing.T) {
			op := Op{ins("unchanged")}
			err := op.UnmarshalJSON([]byte(tc.JSON))
			if err == nil || !errors.Is(err, ErrInvalid) {
				t.Fatalf("UnmarshalJSON(%s) = %v (op %v); want ErrInvalid", tc.JSON, err, op)
			}
			if len(op) != 1 || op[0].Insert != "unchanged" {
				t.Fatalf("failed UnmarshalJSON changed the op to %v", op)
			}
		})
	}
}

func TestUnmarshalErrorMessages(t *testing.T) {
	tests := []struct{ in, want string }{
		{`null`, "operation must be an array, got null"},
		{`[1,0]`, "element 1: retain count must be positive, got 0"},
		{`[-3]`, "element 0: retain count -3 is negative"},
		{`[1.5]`, "element 0: retain count 1.5 is not an integer"},
		{`[""]`, "element 0: insert must not be empty"},
		{`[{"d":0}]`, "element 0: delete count must be positive, got 0"},
		{`[{"x":1}]`, `element 0: delete object has unknown key "x"`},
		{`[{"d":1,"e":1}]`, `element 0: delete object has keys other than "d"`},
		{`[2,null]`, "element 1: expected a retain count, an insert string or {\"d\": n}, got null"},
		{"[\"a\xffb\"]", "element 0: insert string is not valid UTF-8"},
		{"[\"a\x01\"]", "unescaped control character"},
		{`[007]`, "leading zero"},
	}
	for _, tc := range tests {
		_, err := ParseOp([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseOp(%s) = %v; want error containing %q", tc.in, err, tc.want)
		}
	}
}

func TestApplyRejectsInvalidText(t *testing.T) {
	tests := []string{"a\xffb", "\xe4\xb8", "\x80", "ok" + string([]byte{0xed, 0xa0, 0x80})}
	for _, text := range tests {
		if got, err := Apply(text, Op{r(1), ins("x")}); !errors.Is(err, ErrInvalid) {
			t.Errorf("Apply(%q) = %q, %v; want ErrInvalid", text, got, err)
		}
	}
}

// TestServerTieKeepsEachCaretAfterItsOwnText plays the server's rule for
// two concurrent inserts at one spot, in both commit orders and for
// inserts of several code points: the later committed one is transformed
// with its inserts first (Left), and every caret moves through the
// committed operations in order, own for its owner's. Each caret must end
// right after its owner's text, where the owner's own editor has it.
func TestServerTieKeepsEachCaretAfterItsOwnText(t *testing.T) {
	tests := []struct {
		name, doc, c, d string
		at              int
	}{
		{"issue example", "start", "a", "b", 5},
		{"at the start", "start", "a", "b", 0},
		{"in the middle, longer and astral", "start", "aa😀", "bbb", 2},
		{"empty document", "", "ab", "é", 0},
	}
	for _, tc := range tests {
		for _, cFirst := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s, C first %v", tc.name, cFirst), func(t *testing.T) {
				opC := Op{{Retain: tc.at}, {Insert: tc.c}}.Normalize()
				opD := Op{{Retain: tc.at}, {Insert: tc.d}}.Normalize()
				type commit struct {
					op    Op
					owner string
				}
				first, second := commit{opC, "C"}, commit{opD, "D"}
				if !cFirst {
					first, second = second, first
				}
				later, err := Transform(second.op, first.op, Left)
				if err != nil {
					t.Fatal(err)
				}
				log := []commit{first, {later, second.owner}}
				text := tc.doc
				carets := map[string]int{"C": tc.at, "D": tc.at}
				for _, e := range log {
					if text, err = Apply(text, e.op); err != nil {
						t.Fatal(err)
					}
					for who, pos := range carets {
						carets[who] = TransformCursor(pos, e.op, who == e.owner)
					}
				}
				runes := []rune(text)
				for who, ins := range map[string]string{"C": tc.c, "D": tc.d} {
					pos := carets[who]
					n := len([]rune(ins))
					if pos < n || string(runes[pos-n:pos]) != ins {
						t.Errorf("text %q: %s's caret at %d, not right after its %q", text, who, pos, ins)
					}
				}
				// The later committed insert comes first.
				if want := string([]rune(tc.doc)[:tc.at]) + map[bool]string{true: tc.d + tc.c, false: tc.c + tc.d}[cFirst]; !strings.HasPrefix(text, want) {
					t.Errorf("text %q does not start with %q", text, want)
				}
			})
		}
	}
}
