module driftguard.local/pause

go 1.25
