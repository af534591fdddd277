package pgstore

import (
	"cmp"
	"slices"
)

func sortBatches(b []docBatch) {
	slices.SortFunc(b, func(x, y docBatch) int { return cmp.Compare(x.doc, y.doc) })
}
