print("OrgSyncBenchmarks: no scenarios yet")
