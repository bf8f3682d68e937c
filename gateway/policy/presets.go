package policy

// Preset is a named allowlist bundle compiled into the binary.
type Preset struct {
	Name  string
	About string
	Hosts []string
}

// automationRegions are the Azure Automation region prefixes of the original
// product's tables, with the region names users know them by.
var automationRegions = []struct{ prefix, region, about string }{
	{"ncus", "northcentralus", "North Central US"},
	{"we", "westeurope", "West Europe"},
	{"scus", "southcentralus", "South Central US"},
	{"eus2", "eastus2", "East US 2"},
	{"cc", "canadacentral", "Canada Central"},
	{"ne", "northeurope", "North Europe"},
	{"sea", "southeastasia", "South East Asia"},
	{"cid", "centralindia", "Central India"},
	{"jpe", "japaneast", "Japan"},
	{"ase", "australiasoutheast", "Australia"},
}

// Presets returns every preset, log-analytics first, then one per Azure
// Automation region.
func Presets() []Preset {
	ps := []Preset{{
		Name:  "log-analytics",
		About: "Log Analytics / Azure Monitor agent endpoints",
		Hosts: []string{
			"*.ods.opinsights.azure.com",
			"*.oms.opinsights.azure.com",
			"*.blob.core.windows.net",
			"*.azure-automation.net",
			"global.handler.control.monitor.azure.com",
			"*.handler.control.monitor.azure.com",
		},
	}}
	for _, r := range automationRegions {
		ps = append(ps, Preset{
			Name:  "automation-" + r.region,
			About: "Azure Automation job runtime data and agent service, " + r.about,
			Hosts: []string{
				r.prefix + "-jobruntimedata-prod-su1.azure-automation.net",
				r.prefix + "-agentservice-prod-1.azure-automation.net",
			},
		})
	}
	return ps
}

func presetByName(name string) (Preset, bool) {
	for _, p := range Presets() {
		if p.Name == name {
			return p, true
		}
	}
	return Preset{}, false
}
