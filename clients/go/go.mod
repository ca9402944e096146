module sbx.dev/sbx/clients/go

go 1.19
