package ot

// Hand-written cases with results worked out by hand. The table tests check
// them against the implementation, and TestVectors copies them into
// testdata/vectors.json for the JavaScript port.

// r, ins and del keep the tables short.
func r(n int) Component      { return Component{Retain: n} }
func ins(s string) Component { return Component{Insert: s} }
func del(n int) Component    { return Component{Delete: n} }

type applyCase struct {
	Name   string `json:"name"`
	Doc    string `json:"doc"`
	Op     Op     `json:"op"`
	Result string `json:"result"`
	Error  bool   `json:"error,omitempty"`
}

var applyCases = []applyCase{
	{Name: "identity on empty", Doc: "", Op: Op{}, Result: ""},
	{Name: "identity keeps text", Doc: "hello", Op: nil, Result: "hello"},
	{Name: "insert into empty", Doc: "", Op: Op{ins("hi")}, Result: "hi"},
	{Name: "insert at start", Doc: "world", Op: Op{ins("hello ")}, Result: "hello world"},
	{Name: "insert at end with full retain", Doc: "ab", Op: Op{r(2), ins("c")}, Result: "abc"},
	{Name: "trailing retain omitted", Doc: "abcdef", Op: Op{r(1), del(2)}, Result: "adef"},
	{Name: "delete all", Doc: "abc", Op: Op{del(3)}, Result: ""},
	{Name: "replace middle", Doc: "abcdef", Op: Op{r(2), ins("XY"), del(2)}, Result: "abXYef"},
	{Name: "delete before insert order", Doc: "abcdef", Op: Op{r(2), del(2), ins("XY")}, Result: "abXYef"},
	{Name: "astral counts as one", Doc: "a😀b", Op: Op{r(2), ins("!")}, Result: "a😀!b"},
	{Name: "delete astral", Doc: "a😀b", Op: Op{r(1), del(1)}, Result: "ab"},
	{Name: "combining mark is its own code point", Doc: "e\u0301x", Op: Op{r(1), del(1)}, Result: "ex"},
	{Name: "insert between base and combining mark", Doc: "e\u0301", Op: Op{r(1), ins("z")}, Result: "ez\u0301"},
	{Name: "skin tone modifier is a separate code point", Doc: "👍🏽", Op: Op{r(1), del(1)}, Result: "👍"},
	{Name: "CJK and music symbol", Doc: "中𝄞文", Op: Op{r(1), del(1), ins("♪")}, Result: "中♪文"},
	{Name: "non-normalized adjacent retains", Doc: "abcd", Op: Op{r(1), r(1), del(1), del(1)}, Result: "ab"},
	{Name: "retain past end", Doc: "abc", Op: Op{r(4)}, Error: true},
	{Name: "delete past end", Doc: "abc", Op: Op{r(2), del(2)}, Error: true},
	{Name: "delete past end of astral text", Doc: "😀😀", Op: Op{del(3)}, Error: true},
	{Name: "insert after retain past end", Doc: "", Op: Op{r(1), ins("x")}, Error: true},
}

type transformCase struct {
	Name   string `json:"name"`
	Doc    string `json:"doc"`
	A      Op     `json:"a"`
	B      Op     `json:"b"`
	Side   string `json:"side"`
	Result Op     `json:"result"`
}

var transformCases = []transformCase{
	// The server transforms an incoming operation against those committed
	// since its base with the incoming one's inserts first: of two
	// concurrent inserts at one spot, the later committed comes first
	// ("start" + C's "a" then D's "b" = "startba").
	{Name: "server tie: the later committed of two concurrent inserts goes first", Doc: "start", A: Op{r(5), ins("b")}, B: Op{r(5), ins("a")}, Side: "left", Result: Op{r(5), ins("b")}},
	{Name: "tie left: a's insert first", Doc: "xy", A: Op{r(1), ins("A")}, B: Op{r(1), ins("B")}, Side: "left", Result: Op{r(1), ins("A")}},
	{Name: "tie right: a's insert after b's", Doc: "xy", A: Op{r(1), ins("A")}, B: Op{r(1), ins("B")}, Side: "right", Result: Op{r(2), ins("A")}},
	{Name: "tie at start left", Doc: "", A: Op{ins("A")}, B: Op{ins("BB")}, Side: "left", Result: Op{ins("A")}},
	{Name: "tie at start right", Doc: "", A: Op{ins("A")}, B: Op{ins("BB")}, Side: "right", Result: Op{r(2), ins("A")}},
	{Name: "tie with astral insert right", Doc: "ab", A: Op{r(1), ins("x")}, B: Op{r(1), ins("😀🎉")}, Side: "right", Result: Op{r(3), ins("x")}},
	{Name: "insert before other's insert", Doc: "abcd", A: Op{r(1), ins("A")}, B: Op{r(3), ins("B")}, Side: "right", Result: Op{r(1), ins("A")}},
	{Name: "insert after other's insert", Doc: "abcd", A: Op{r(3), ins("A")}, B: Op{r(1), ins("😀")}, Side: "left", Result: Op{r(4), ins("A")}},
	{Name: "same delete", Doc: "abcd", A: Op{r(1), del(2)}, B: Op{r(1), del(2)}, Side: "left", Result: Op{}},
	{Name: "overlapping deletes", Doc: "abcdef", A: Op{r(1), del(3)}, B: Op{r(2), del(3)}, Side: "left", Result: Op{r(1), del(1)}},
	{Name: "delete containing other's delete", Doc: "abcdef", A: Op{del(6)}, B: Op{r(2), del(2)}, Side: "left", Result: Op{del(4)}},
	{Name: "delete over other's insert keeps it", Doc: "abcd", A: Op{r(1), del(2)}, B: Op{r(2), ins("X")}, Side: "left", Result: Op{r(1), del(1), r(1), del(1)}},
	{Name: "insert inside other's delete survives", Doc: "abcd", A: Op{r(2), ins("X")}, B: Op{r(1), del(2)}, Side: "left", Result: Op{r(1), ins("X")}},
	{Name: "insert at start of other's delete", Doc: "abcd", A: Op{r(1), ins("X")}, B: Op{r(1), del(2)}, Side: "right", Result: Op{r(1), ins("X")}},
	{Name: "insert at end of other's delete", Doc: "abcd", A: Op{r(3), ins("X")}, B: Op{r(1), del(2)}, Side: "left", Result: Op{r(1), ins("X")}},
	{Name: "replace against same position insert left", Doc: "abc", A: Op{r(1), ins("X"), del(1)}, B: Op{r(1), ins("Y")}, Side: "left", Result: Op{r(1), ins("X"), r(1), del(1)}},
	{Name: "replace against same position insert right", Doc: "abc", A: Op{r(1), ins("X"), del(1)}, B: Op{r(1), ins("Y")}, Side: "right", Result: Op{r(2), ins("X"), del(1)}},
	{Name: "astral positions", Doc: "😀a😀b", A: Op{r(3), del(1)}, B: Op{del(1), r(1), ins("🎉🎉")}, Side: "left", Result: Op{r(4), del(1)}},
	{Name: "other deleted everything", Doc: "abc", A: Op{r(3), ins("!")}, B: Op{del(3)}, Side: "left", Result: Op{ins("!")}},
	{Name: "shorter base lengths differ (omitted retains)", Doc: "abcdef", A: Op{r(5), del(1)}, B: Op{ins("Z")}, Side: "left", Result: Op{r(6), del(1)}},
	{Name: "delete-then-insert spelling ties like insert-then-delete", Doc: "a", A: Op{r(1), ins("c")}, B: Op{del(1), ins("a")}, Side: "left", Result: Op{r(1), ins("c")}},
	{Name: "identity against anything", Doc: "abc", A: Op{}, B: Op{r(1), ins("x"), del(1)}, Side: "left", Result: Op{}},
	{Name: "anything against identity", Doc: "abc", A: Op{r(1), ins("x"), del(1)}, B: nil, Side: "right", Result: Op{r(1), ins("x"), del(1)}},
}

type composeCase struct {
	Name   string `json:"name"`
	Doc    string `json:"doc"`
	A      Op     `json:"a"`
	B      Op     `json:"b"`
	Result Op     `json:"result"`
}

var composeCases = []composeCase{
	{Name: "two inserts typed in a row", Doc: "", A: Op{ins("a")}, B: Op{r(1), ins("b")}, Result: Op{ins("ab")}},
	{Name: "insert then delete it", Doc: "xy", A: Op{r(1), ins("abc")}, B: Op{r(2), del(1)}, Result: Op{r(1), ins("ac")}},
	{Name: "insert then delete all of it", Doc: "xy", A: Op{r(1), ins("abc")}, B: Op{r(1), del(3)}, Result: Op{}},
	{Name: "delete then insert same spot", Doc: "abc", A: Op{r(1), del(1)}, B: Op{r(1), ins("X")}, Result: Op{r(1), ins("X"), del(1)}},
	{Name: "deletes accumulate", Doc: "abcdef", A: Op{r(1), del(1)}, B: Op{r(1), del(1)}, Result: Op{r(1), del(2)}},
	{Name: "astral insert partly deleted", Doc: "", A: Op{ins("😀a🎉")}, B: Op{r(1), del(1)}, Result: Op{ins("😀🎉")}},
	{Name: "second op past first op's end", Doc: "abcdef", A: Op{ins("x")}, B: Op{r(5), del(1)}, Result: Op{ins("x"), r(4), del(1)}},
	{Name: "identities", Doc: "abc", A: nil, B: Op{}, Result: Op{}},
}

type cursorCase struct {
	Name   string `json:"name"`
	Op     Op     `json:"op"`
	Pos    int    `json:"pos"`
	Own    bool   `json:"own"`
	Result int    `json:"result"`
}

var cursorCases = []cursorCase{
	{Name: "insert before caret", Op: Op{r(1), ins("ab")}, Pos: 3, Result: 5},
	{Name: "insert after caret", Op: Op{r(4), ins("ab")}, Pos: 3, Result: 3},
	{Name: "other's insert at caret stays before", Op: Op{r(3), ins("ab")}, Pos: 3, Own: false, Result: 3},
	{Name: "own insert at caret moves after", Op: Op{r(3), ins("ab")}, Pos: 3, Own: true, Result: 5},
	{Name: "astral insert counts code points", Op: Op{ins("😀😀")}, Pos: 1, Result: 3},
	{Name: "delete before caret", Op: Op{r(1), del(2)}, Pos: 5, Result: 3},
	{Name: "delete covering caret", Op: Op{r(1), del(4)}, Pos: 3, Result: 1},
	{Name: "delete ending at caret", Op: Op{r(1), del(2)}, Pos: 3, Result: 1},
	{Name: "delete starting at caret", Op: Op{r(3), del(2)}, Pos: 3, Result: 3},
	{Name: "replace at caret, own", Op: Op{r(3), ins("xy"), del(2)}, Pos: 3, Own: true, Result: 5},
	{Name: "replace at caret written delete first, own", Op: Op{r(3), del(2), ins("xy")}, Pos: 3, Own: true, Result: 5},
	{Name: "replace covering caret, other", Op: Op{r(1), ins("xy"), del(4)}, Pos: 3, Own: false, Result: 3},
	{Name: "replace covering caret, own", Op: Op{r(1), ins("xy"), del(4)}, Pos: 3, Own: true, Result: 3},
	{Name: "caret past op end shifts", Op: Op{ins("abc")}, Pos: 10, Result: 13},
	{Name: "caret at 0 with insert at 0, other", Op: Op{ins("abc")}, Pos: 0, Result: 0},
	{Name: "negative caret clamps", Op: Op{r(1), ins("a")}, Pos: -4, Result: 0},
	{Name: "identity", Op: nil, Pos: 7, Own: true, Result: 7},
	// The server's tie rule seen by carets, on "start" with both carets at
	// 5: C's "a" and D's concurrent "b". Each caret moves through the
	// committed operations in commit order, own for its owner's, and ends
	// right after its owner's text.
	{Name: "server tie, C first: C's own a moves C's caret after it", Op: Op{r(5), ins("a")}, Pos: 5, Own: true, Result: 6},
	{Name: "server tie, C first: D's b, committed before a, pushes C's caret", Op: Op{r(5), ins("b")}, Pos: 6, Own: false, Result: 7},
	{Name: "server tie, C first: C's a leaves D's caret before it", Op: Op{r(5), ins("a")}, Pos: 5, Own: false, Result: 5},
	{Name: "server tie, C first: D's own b moves D's caret after it", Op: Op{r(5), ins("b")}, Pos: 5, Own: true, Result: 6},
}

type selectionCase struct {
	Name   string `json:"name"`
	Op     Op     `json:"op"`
	Anchor int    `json:"anchor"`
	Head   int    `json:"head"`
	Own    bool   `json:"own"`
	Result [2]int `json:"result"`
}

var selectionCases = []selectionCase{
	{Name: "collapsed is a caret", Op: Op{r(2), ins("x")}, Anchor: 2, Head: 2, Result: [2]int{2, 2}},
	{Name: "insert at start stays outside", Op: Op{r(2), ins("xx")}, Anchor: 2, Head: 5, Result: [2]int{4, 7}},
	{Name: "insert at end stays outside", Op: Op{r(5), ins("xx")}, Anchor: 2, Head: 5, Result: [2]int{2, 5}},
	{Name: "own insert at end extends", Op: Op{r(5), ins("xx")}, Anchor: 2, Head: 5, Own: true, Result: [2]int{2, 7}},
	{Name: "backwards selection", Op: Op{r(2), ins("xx")}, Anchor: 5, Head: 2, Result: [2]int{7, 4}},
	{Name: "insert inside grows", Op: Op{r(3), ins("😀")}, Anchor: 2, Head: 5, Result: [2]int{2, 6}},
	{Name: "delete swallowing the selection collapses it", Op: Op{r(1), del(6)}, Anchor: 2, Head: 5, Result: [2]int{1, 1}},
	// The server's tie rule (see the cursor cases) for the selection "art"
	// of "start" whose owner's concurrent "a" at 5 committed first and
	// extended it; another's "b", committed next, is placed before that "a",
	// inside the selection, whose end stays after the owner's text.
	{Name: "server tie: owner's own insert at the end extends the selection", Op: Op{r(5), ins("a")}, Anchor: 2, Head: 5, Own: true, Result: [2]int{2, 6}},
	{Name: "server tie: the later concurrent insert goes inside, before the owner's", Op: Op{r(5), ins("b")}, Anchor: 2, Head: 6, Own: false, Result: [2]int{2, 7}},
	{Name: "server tie: another's insert at the start stays outside", Op: Op{r(2), ins("b")}, Anchor: 6, Head: 2, Own: false, Result: [2]int{7, 3}},
}

// ownsCaretCase is the rule for the own argument above: which committed
// operations move a caret as its owner's. The server (runtime/doc) and the
// clients decide with it, so one person's two tabs agree with everyone.
type ownsCaretCase struct {
	Name        string `json:"name"`
	CaretUser   string `json:"caretUser"`
	CaretClient string `json:"caretClient"`
	OpUser      string `json:"opUser"`
	OpClient    string `json:"opClient"`
	Result      bool   `json:"result"`
}

var ownsCaretCases = []ownsCaretCase{
	{Name: "the caret's own client", CaretUser: "ada", CaretClient: "c1", OpUser: "ada", OpClient: "c1", Result: true},
	{Name: "same user in another tab is someone else", CaretUser: "ada", CaretClient: "c1", OpUser: "ada", OpClient: "c2", Result: false},
	{Name: "another user", CaretUser: "ada", CaretClient: "c1", OpUser: "bob", OpClient: "c2", Result: false},
	{Name: "another user under the same client id", CaretUser: "ada", CaretClient: "c1", OpUser: "bob", OpClient: "c1", Result: false},
	{Name: "caret of unknown client: the user decides", CaretUser: "ada", CaretClient: "", OpUser: "ada", OpClient: "c2", Result: true},
	{Name: "caret of unknown client, another user", CaretUser: "ada", CaretClient: "", OpUser: "bob", OpClient: "c1", Result: false},
}

type normalizeCase struct {
	Name   string `json:"name"`
	Op     Op     `json:"op"`
	Result Op     `json:"result"`
}

var normalizeCases = []normalizeCase{
	{Name: "empty", Op: Op{}, Result: Op{}},
	{Name: "trailing retain dropped", Op: Op{ins("a"), r(3)}, Result: Op{ins("a")}},
	{Name: "only retain", Op: Op{r(3)}, Result: Op{}},
	{Name: "merge retains", Op: Op{r(1), r(2), del(1)}, Result: Op{r(3), del(1)}},
	{Name: "merge inserts", Op: Op{ins("a"), ins("😀")}, Result: Op{ins("a😀")}},
	{Name: "merge deletes", Op: Op{del(1), del(2)}, Result: Op{del(3)}},
	{Name: "insert moves before delete", Op: Op{r(1), del(2), ins("x")}, Result: Op{r(1), ins("x"), del(2)}},
	{Name: "interleaved inserts and deletes gather", Op: Op{ins("a"), del(1), ins("b"), del(1)}, Result: Op{ins("ab"), del(2)}},
	{Name: "retain separates", Op: Op{del(1), r(1), ins("x")}, Result: Op{del(1), r(1), ins("x")}},
}

// invalidCase is raw JSON that must be rejected. Lexical cases are only
// distinguishable before parsing (1.0 and 1e1 become the integers 1 and 10
// in JavaScript), so the browser port skips them.
type invalidCase struct {
	Name    string `json:"name"`
	JSON    string `json:"json"`
	Lexical bool   `json:"lexical,omitempty"`
}

var invalidCases = []invalidCase{
	{Name: "null", JSON: `null`},
	{Name: "object", JSON: `{"ops":[1]}`},
	{Name: "string", JSON: `"abc"`},
	{Name: "number", JSON: `5`},
	{Name: "zero retain", JSON: `[0]`},
	{Name: "negative retain", JSON: `[-3]`},
	{Name: "fractional retain", JSON: `[1.5]`},
	{Name: "integral float retain", JSON: `[1.0]`, Lexical: true},
	{Name: "exponent retain", JSON: `[1e1]`, Lexical: true},
	{Name: "huge retain", JSON: `[9007199254740992]`},
	{Name: "empty insert", JSON: `["a",""]`},
	{Name: "zero delete", JSON: `[{"d":0}]`},
	{Name: "negative delete", JSON: `[{"d":-1}]`},
	{Name: "fractional delete", JSON: `[{"d":2.5}]`},
	{Name: "string delete count", JSON: `[{"d":"2"}]`},
	{Name: "null delete count", JSON: `[{"d":null}]`},
	{Name: "empty object", JSON: `[{}]`},
	{Name: "unknown key", JSON: `[{"del":1}]`},
	{Name: "extra key", JSON: `[{"d":1,"x":2}]`},
	{Name: "null element", JSON: `[1,null]`},
	{Name: "boolean element", JSON: `[true]`},
	{Name: "nested array", JSON: `[[1]]`},
	{Name: "truncated", JSON: `[1,"a"`},
	{Name: "trailing comma", JSON: `[1,]`},
	{Name: "trailing data", JSON: `[1] [2]`},
	{Name: "sum beyond max", JSON: `[9007199254740991,{"d":1}]`},
}
