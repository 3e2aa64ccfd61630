package main

type evalCmd struct {
	modelFlags
}
